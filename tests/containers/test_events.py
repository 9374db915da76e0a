"""The monitor log keeps English lines for maintainers; students read each event again as
a sentence in their language, from the pattern and values stored beside the line."""

import pytest
from django.urls import reverse
from django.utils import translation

from containers import events
from containers.services import event_record
from tests.factories import ContainerEventFactory

pytestmark = pytest.mark.django_db


def test_an_event_keeps_its_english_line_and_says_it_again_in_zh_hant(student, host):
    row = event_record(
        event=events.started(
            username=student.username, container_name="c1", cpus="4", memory_gb=16, gpus="0,1", ssh_port=10022
        ),
        user=student,
        host=host,
    )
    row.refresh_from_db()
    assert row.message == (
        f"{student.username}'s container c1 started (CPUs 4, memory 16 GiB, GPUs 0,1, port 10022)"
    )
    assert row.as_log_line().endswith(row.message + ".")
    with translation.override("zh-hant"):
        assert row.sentence() == (
            f"{student.username} 的容器 c1 已啟動（CPU 4、記憶體 16 GiB、GPU 0,1、連接埠 10022）"
        )
    with translation.override("en"):
        assert row.sentence() == row.message


def test_a_jobs_status_word_is_translated_too(student, host):
    row = event_record(
        event=events.job_finished(username=student.username, job_id=3, status="timed_out", exit_code=None),
        user=student,
    )
    with translation.override("zh-hant"):
        assert row.sentence() == f"{student.username} 的工作 #3 逾時（無結束代碼）"


def test_an_event_written_from_a_message_alone_stays_as_written(student):
    row = event_record(event=events.Event(events.INFO, "GPU 0 of gpu1 came back"), user=student)
    with translation.override("zh-hant"):
        assert row.sentence() == "GPU 0 of gpu1 came back"


def test_a_pattern_that_no_longer_fits_its_values_falls_back_to_the_line(student):
    row = ContainerEventFactory(
        user=student, message="the line", template="%(missing)s is gone", params={"other": 1}
    )
    assert row.sentence() == "the line"


def test_the_dashboard_says_the_students_events_in_their_language(client, student, host):
    student.language = "zh-hant"
    student.save()
    event_record(event=events.recreated_on_request(username=student.username), user=student, host=host)
    client.force_login(student)
    page = client.get(reverse("dashboard")).content.decode()
    assert f"應管理員要求，{student.username} 的容器正在重建" in page
    assert "at a maintainer&#x27;s request" not in page
