"""The Files pages and a job's outputs: owner, other user, anonymous, wrong method, and
the attacker's uploads (over the limit, odd names)."""

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from bookings.models import HostAccess
from jobs.models import Job
from tests.factories import JobFactory, ReservationFactory, UserFactory, host_with_roots

pytestmark = pytest.mark.django_db
USER = "m11007s05"


@pytest.fixture
def lab_host(tmp_path):
    return host_with_roots(tmp_path / "roots", name="gpu-files")


@pytest.fixture
def work(lab_host) -> Path:
    folder = Path(lab_host.work_root) / USER
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "metrics.csv").write_text("epoch,loss\n")
    return folder


@pytest.fixture
def owner(default_profile):
    return UserFactory(username=USER)


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def browse(host, path=""):
    return reverse("files-browse", args=[host.pk]) + (f"?path={path}" if path else "")


def download(host, path):
    return reverse("files-download", args=[host.pk]) + f"?path={path}"


def upload(client, host, *, content=b"data", filename="notes.txt", path="", name=None):
    data = {"path": path, "file": SimpleUploadedFile(filename, content)}
    if name is not None:
        data["name"] = name
    return client.post(reverse("files-upload", args=[host.pk]), data)


def test_the_owner_lists_and_downloads_their_work_folder(owner_client, lab_host, work):
    page = owner_client.get(browse(lab_host))
    assert page.status_code == 200 and b"results/" in page.content
    inner = owner_client.get(browse(lab_host, "results"))
    assert b"metrics.csv" in inner.content
    response = owner_client.get(download(lab_host, "results/metrics.csv"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
    assert b"".join(response.streaming_content) == b"epoch,loss\n"


def test_files_is_one_click_for_a_one_server_lab(owner_client, lab_host):
    assert owner_client.get(reverse("files")).url == browse(lab_host)


def test_a_student_only_ever_sees_her_own_folder(client, lab_host, work, default_profile):
    other = UserFactory(username="victim")
    (Path(lab_host.work_root) / "victim").mkdir()
    (Path(lab_host.work_root) / "victim" / "thesis.tex").write_text("secret")
    client.force_login(other)
    assert b"results" not in client.get(browse(lab_host)).content
    assert client.get(download(lab_host, "results/metrics.csv")).status_code == 404
    assert client.get(download(lab_host, "../m11007s05/results/metrics.csv")).status_code == 404


@pytest.mark.parametrize("path", ["../victim/thesis.tex", "%2Fetc%2Fpasswd", "results/missing"])
def test_paths_that_leave_the_folder_or_do_not_exist_answer_404(owner_client, lab_host, work, path):
    # A NUL is refused (400) before any view runs (aivc_portal.middleware).
    assert owner_client.get(download(lab_host, path)).status_code == (400 if "%00" in path else 404)


def test_a_path_with_a_nul_is_refused_before_the_view(owner_client, lab_host, work):
    assert owner_client.get(download(lab_host, "results/%00")).status_code == 400


def test_a_link_planted_to_another_students_folder_answers_404(owner_client, lab_host, work):
    victim = Path(lab_host.work_root) / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("secret")
    (work / "theirs").symlink_to(victim)
    assert owner_client.get(browse(lab_host, "theirs")).status_code == 404
    assert owner_client.get(download(lab_host, "theirs/thesis.tex")).status_code == 404


def test_a_host_not_open_to_the_user_answers_404(owner_client, lab_host, work, owner):
    closed = host_with_roots(Path(lab_host.work_root).parent / "closed", name="gpu-closed")
    access = HostAccess.objects.create(host=closed)
    access.users.add(UserFactory(username="someone"))
    assert owner_client.get(browse(closed)).status_code == 404
    assert owner_client.get(reverse("files-browse", args=[99999])).status_code == 404


def test_anonymous_goes_to_the_login_page(client, lab_host):
    for url in (browse(lab_host), download(lab_host, "x"), reverse("files")):
        response = client.get(url)
        assert response.status_code == 302 and reverse("login") in response.url
    response = upload(client, lab_host)
    assert response.status_code == 302 and reverse("login") in response.url


def test_wrong_methods_are_refused(owner_client, lab_host, work):
    assert owner_client.post(browse(lab_host)).status_code == 405
    assert owner_client.post(download(lab_host, "results/metrics.csv")).status_code == 405
    assert owner_client.get(reverse("files-upload", args=[lab_host.pk])).status_code == 405


def test_an_upload_lands_in_the_folder_shown(owner_client, lab_host, work):
    response = upload(owner_client, lab_host, path="results", content=b"hello")
    assert response.status_code == 302 and response.url == browse(lab_host, "results")
    assert (work / "results" / "notes.txt").read_bytes() == b"hello"


def test_an_upload_over_the_limit_is_refused_and_nothing_kept(owner_client, lab_host, work, settings):
    settings.FILES_UPLOAD_MAX_MB = 1
    response = upload(owner_client, lab_host, content=b"x" * (1024 * 1024 + 1), filename="big.bin")
    assert response.status_code == 413
    assert "upload limit of 1 MiB" in response.content.decode()
    assert not (work / "big.bin").exists()
    assert [p.name for p in work.iterdir() if p.name.startswith(".upload-")] == []


@pytest.mark.parametrize("name", ["../escape.txt", "a/b.txt", "x\x00y"])
def test_an_upload_name_with_a_slash_or_nul_is_refused(owner_client, lab_host, work, name):
    response = upload(owner_client, lab_host, name=name)
    assert response.status_code == 302
    assert sorted(p.name for p in work.iterdir()) == ["results"]
    assert not (Path(lab_host.work_root) / "escape.txt").exists()


def test_a_client_filename_with_a_path_keeps_only_its_last_name(owner_client, lab_host, work):
    upload(owner_client, lab_host, filename="../../etc/cron.d/evil")
    assert (work / "evil").is_file()
    assert not (Path(lab_host.work_root) / "etc").exists()


def test_an_upload_without_a_csrf_token_is_refused(client, owner, lab_host, work):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert upload(strict, lab_host).status_code == 403
    assert sorted(p.name for p in work.iterdir()) == ["results"]


def test_a_server_with_its_own_agent_says_where_the_folder_lives(owner_client, lab_host, settings):
    settings.FILES_SHARED_WORK_ROOT = False
    lab_host.served_by_agent = True
    lab_host.save()
    page = owner_client.get(browse(lab_host))
    assert page.status_code == 200 and b'data-testid="elsewhere"' in page.content
    assert owner_client.get(download(lab_host, "results/metrics.csv")).status_code == 404


# A job's outputs ------------------------------------------------------------------------


@pytest.fixture
def finished_job(owner, lab_host, work):
    now = timezone.now()
    reservation = ReservationFactory(
        user=owner, host=lab_host, kind="job", start=now - timedelta(minutes=5), end=now
    )
    job = JobFactory(
        user=owner, reservation=reservation, status=Job.Status.SUCCEEDED, started_at=now, finished_at=now
    )
    outputs = work / "jobs" / str(job.pk)
    outputs.mkdir(parents=True)
    (outputs / "model.pt").write_bytes(b"weights")
    return job


def test_the_job_page_links_its_outputs_and_the_zip_holds_them(owner_client, finished_job, lab_host):
    page = owner_client.get(reverse("job-detail", args=[finished_job.pk])).content.decode()
    assert 'data-testid="outputs-zip"' in page and 'data-testid="outputs-browse"' in page
    response = owner_client.get(reverse("job-outputs-zip", args=[finished_job.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == ["model.pt"]


def test_another_students_job_outputs_answer_404(client, finished_job, default_profile):
    client.force_login(UserFactory(username="victim"))
    assert client.get(reverse("job-outputs-zip", args=[finished_job.pk])).status_code == 404


def test_an_upload_to_another_host_id_is_404_not_500(client, lab_host, work):
    # Found by tests/bench/test_form_fuzz.py: the NUL check read the multipart body before
    # the upload's own limit was in place, and the view then failed on its upload handlers.
    client.force_login(UserFactory(username="m11007s06"))
    assert upload(client, lab_host).status_code == 404
    assert upload(client, type(lab_host)(pk=99999999)).status_code == 404


def test_a_nul_in_the_upload_folder_is_a_400(owner_client, lab_host, work):
    assert upload(owner_client, lab_host, path="results\x00").status_code == 400
    assert not (work / "notes.txt").exists()
