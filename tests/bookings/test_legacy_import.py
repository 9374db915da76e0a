from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import CapabilityProfile, User
from accounts.selectors import capability_for
from bookings.legacy_import import LegacyImportError, evaluate_expression, import_legacy
from bookings.models import GpuAllocation, Reservation
from containers.models import Gpu, Host, Image
from tests.bookings.legacy_files import (
    CAPABILITY,
    GPU0_TWICE,
    HEADER,
    USED,
    USERS,
    USING,
    write_old_system,
)
from tests.factories import ImageFactory, UserFactory, local


def run_import(cfg: Path, jobs: Path, **kwargs):
    return import_legacy(cfg_dir=cfg, jobs_dir=jobs, host_name="gpu-old", **kwargs)


def snapshot() -> dict:
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Host, Gpu, Image, CapabilityProfile, User, Reservation, GpuAllocation)
    }


@pytest.fixture
def old_files(tmp_path):
    return write_old_system(tmp_path)


@pytest.mark.django_db
def test_it_imports_the_host_its_gpus_and_images(old_files):
    run_import(*old_files)
    host = Host.objects.get(name="gpu-old")
    assert (host.cpus, host.ram_gb, host.swap_gb, host.memory_gb) == (62, 30, 10, 40)
    assert (host.max_work_space_gb, host.max_backup_space_gb) == (500, 200)
    assert (host.work_root, host.dataset_root, host.backup_root) == (
        "/mnt/Users",
        "/mnt/Dataset",
        "/mnt/Backup",
    )
    assert list(host.gpus.values_list("index", flat=True)) == [0, 1, 2, 3]
    assert Image.objects.get(is_default=True).reference == "rober5566a/aivc-server:latest"
    assert Image.objects.get(reference__endswith="ubuntu20.04").is_active
    # Named only in the history: kept for the record, never offered.
    assert not Image.objects.get(reference="rober5566a/aivc-server:cuda10-old").is_active


@pytest.mark.django_db
def test_the_default_profile_takes_max_default_capability(old_files):
    run_import(*old_files)
    default = CapabilityProfile.objects.get(is_default=True)
    assert (default.cpus, default.memory_gb, default.gpus) == (8, 32, 1)
    assert (default.work_space_gb, default.backup_space_gb) == (200, 50)


@pytest.mark.django_db
def test_max_means_the_host_maximum_and_a_missing_key_follows_the_default(old_files):
    run_import(*old_files)
    user = User.objects.get(username="m11107s01")
    host = Host.objects.get(name="gpu-old")
    limits = capability_for(user=user, host=host)
    assert limits.cpus == 62  # max
    assert limits.memory_gb == 36  # own value
    assert limits.backup_space_gb == 200  # max
    assert limits.gpus == 1  # missing: the default's
    assert limits.work_space_gb == 200  # missing: the default's


@pytest.mark.django_db
def test_users_keep_their_port_image_and_command_and_passwords_are_hashed(old_files):
    run_import(*old_files)
    user = User.objects.get(username="m11007s05")
    assert user.forward_port == 10005
    assert user.check_password("correct horse battery staple")
    assert "correct horse battery staple" not in user.password
    assert not user.must_change_password
    other = User.objects.get(username="m11107s01")
    assert other.check_password("0000")
    assert other.password != "0000"
    assert other.must_change_password  # the old CLI default is too weak to keep
    assert other.default_image.reference.endswith("ubuntu20.04")
    assert other.default_extra_command == "jupyter lab"


@pytest.mark.django_db
def test_an_allowed_id_without_a_config_gets_an_account_with_a_free_port_and_must_change(old_files):
    report = run_import(*old_files)
    user = User.objects.get(username="m11207s09")
    assert user.is_active
    assert user.must_change_password
    assert user.forward_port not in (10001, 10005)
    assert user.has_usable_password()
    [(username, password)] = report.one_time_passwords
    assert username == "m11207s09"
    assert user.check_password(password)


@pytest.mark.django_db
def test_the_schedules_become_reservations_with_their_status_and_gpus(old_files):
    run_import(*old_files)
    used = Reservation.objects.get(user__username="m11007s05", start=local(2025, 1, 1, 13, 30))
    assert used.status == Reservation.Status.ENDED
    assert used.gpu_indices() == [0, 1]
    assert (used.cpus, used.memory_gb, used.gpu_count) == (8, 32, 2)
    assert used.image.reference == "rober5566a/aivc-server:latest"  # null: the default image
    assert used.ended_at == local(2025, 1, 4, 13, 30)
    no_gpu = Reservation.objects.get(user__username="m11107s01", start=local(2025, 1, 2, 9))
    assert no_gpu.gpu_indices() == []
    assert no_gpu.cpus == Decimal("4.5")
    running = Reservation.objects.get(status=Reservation.Status.RUNNING)
    assert running.gpu_indices() == [2]
    assert running.forward_port == 10001  # null: the user's port
    assert running.extra_command == "python train.py"
    scheduled = Reservation.objects.get(status=Reservation.Status.SCHEDULED)
    assert scheduled.start == local(2026, 3, 4, 10)
    assert scheduled.gpu_indices() == [0]
    assert scheduled.started_at is None


@pytest.mark.django_db
def test_a_second_import_changes_nothing(old_files):
    run_import(*old_files)
    before = snapshot()
    report = run_import(*old_files)
    assert report.changes == []
    assert snapshot() == before


@pytest.mark.django_db
def test_a_dry_run_reports_the_changes_and_saves_nothing(old_files):
    report = run_import(*old_files, dry_run=True)
    assert "create user m11007s05" in report.changes
    assert report.one_time_passwords == []
    assert not User.objects.exists()
    assert not Host.objects.exists()


@pytest.mark.django_db
def test_a_bad_row_stops_the_import_names_the_row_and_imports_nothing(tmp_path):
    bad = USED + '2025-02-01 10:00:00,2025-02-01 12:00:00,m11007s05,2,8,"[0, one]",null,null,null\n'
    cfg, jobs = write_old_system(tmp_path, used=bad)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert (caught.value.file, caught.value.line) == ("used.csv", 4)
    assert "gpus" in caught.value.reason
    assert not Host.objects.exists()
    assert not User.objects.exists()
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_gpu_booked_twice_in_the_history_is_imported_as_it_happened(tmp_path):
    cfg, jobs = write_old_system(tmp_path, used=HEADER + GPU0_TWICE)
    run_import(cfg, jobs)
    history = Reservation.objects.filter(start__date=local(2025, 3, 1, 0, 0).date()).order_by("start")
    assert [(row.user.username, row.status, row.gpu_indices()) for row in history] == [
        ("m11007s05", Reservation.Status.ENDED, [0]),
        ("m11107s01", Reservation.Status.ENDED, [0]),
    ]
    # History holds no GPU: it never blocks a booking.
    assert not GpuAllocation.objects.filter(reservation__in=history, active=True).exists()
    assert GpuAllocation.objects.filter(
        reservation__status=Reservation.Status.SCHEDULED, active=True
    ).exists()

    before = snapshot()
    assert run_import(cfg, jobs).changes == []
    assert snapshot() == before


@pytest.mark.django_db
def test_a_gpu_booked_twice_in_booking_csv_is_refused_with_its_row(tmp_path):
    booking = HEADER + GPU0_TWICE.replace("2025-03-01", "2026-03-10")
    cfg, jobs = write_old_system(tmp_path, booking=booking)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert (caught.value.file, caught.value.line) == ("booking.csv", 3)
    assert "GPU 0 is already held" in caught.value.reason
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_row_that_ends_gives_back_its_gpus_on_the_next_import(tmp_path):
    cfg, jobs = write_old_system(tmp_path)
    run_import(cfg, jobs)
    (jobs / "using.csv").write_text(HEADER)
    (jobs / "used.csv").write_text(USED + USING.removeprefix(HEADER))
    run_import(cfg, jobs)
    ended = Reservation.objects.get(start=local(2026, 3, 2, 9))
    assert ended.status == Reservation.Status.ENDED
    assert list(ended.allocations.values_list("gpu__index", "active")) == [(2, False)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("written", "kind"),
    [("password: 0000", "a number"), ("password: yes", "true/false")],
)
def test_a_password_yaml_reads_as_no_text_is_refused_with_its_line(tmp_path, written, kind):
    users = USERS.replace('password: "0000"', written)
    cfg, jobs = write_old_system(tmp_path, users=users)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert (caught.value.file, caught.value.line) == ("users_config.yaml", 11)
    assert "m11107s01" in caught.value.reason
    assert kind in caught.value.reason
    assert "quotes" in caught.value.reason
    assert written.split()[1] not in str(caught.value)
    assert not User.objects.exists()


@pytest.mark.django_db
def test_past_history_is_not_refused_by_the_rules_for_new_bookings(old_files):
    """A used.csv row from 2025 is long past and over the default profile: still imported."""
    run_import(*old_files)
    assert Reservation.objects.filter(status=Reservation.Status.ENDED).count() == 2


@pytest.mark.django_db
def test_a_bad_config_value_names_its_line_and_writes_nothing(tmp_path):
    # Each kind of bad value is a parsing case (test_legacy_parse.py); here, that the
    # import stops on one with its file and line, before anything is written.
    capability = CAPABILITY.replace("ram + swap_size", "__import__('os').system('true')")
    cfg, jobs = write_old_system(tmp_path, capability=capability)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert (caught.value.file, caught.value.line) == ("capability_config.yaml", 8)
    assert "max.memory" in caught.value.reason
    assert not Host.objects.exists()


@pytest.mark.django_db
def test_two_users_with_one_port_are_refused(tmp_path):
    cfg, jobs = write_old_system(tmp_path, users=USERS.replace("forward_port: 10001", "forward_port: 10005"))
    with pytest.raises(LegacyImportError, match="forward_port 10005"):
        run_import(cfg, jobs)


def test_the_expression_evaluator_does_arithmetic_only():
    names = {"ram": 30, "swap_size": 10}
    assert evaluate_expression("ram / (ram + swap_size)", names) == 0.75
    assert evaluate_expression("-ram + 2 * swap_size", names) == -10
    assert evaluate_expression(40, names) == 40
    for expression in ("ram ** 2", "open('x')", "ram.real", "disk + 1", "ram / 0", "[ram]"):
        with pytest.raises(ValueError):
            evaluate_expression(expression, names)


@pytest.mark.django_db
def test_the_command_never_prints_a_config_password(old_files):
    cfg, jobs = old_files
    out = StringIO()
    call_command("import_aivc", "--cfg", str(cfg), "--jobs", str(jobs), "--host", "gpu-old", stdout=out)
    output = out.getvalue()
    assert "correct horse battery staple" not in output
    assert "user: 3 created" in output
    assert "Imported into host gpu-old." in output


@pytest.mark.django_db
def test_the_command_reports_a_bad_file_as_an_error(tmp_path):
    cfg, jobs = write_old_system(tmp_path, booking="start,end,user_id\n")
    with pytest.raises(CommandError, match=r"Nothing was imported\. booking\.csv, line 1: missing column"):
        call_command(
            "import_aivc", "--cfg", str(cfg), "--jobs", str(jobs), "--host", "gpu-old", stdout=StringIO()
        )


@pytest.mark.django_db
def test_an_extra_command_the_launch_could_not_split_is_refused_with_its_row(tmp_path):
    cfg, jobs = write_old_system(tmp_path, using=USING.replace("python train.py", "python 'train.py"))
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert (caught.value.file, caught.value.line) == ("using.csv", 2)
    assert "extra_command cannot be read as arguments (No closing quotation)" in caught.value.reason
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_default_command_the_launch_could_not_split_is_refused_with_its_line(tmp_path):
    cfg, jobs = write_old_system(
        tmp_path, users=USERS.replace("extra_command: jupyter lab", 'extra_command: "lab \\\\"')
    )
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert caught.value.file == "users_config.yaml"
    assert "extra_command of m11107s01 cannot be read as arguments" in caught.value.reason
    assert not User.objects.exists()


@pytest.mark.django_db
def test_a_port_an_existing_account_holds_is_refused_with_its_line_and_nothing_is_written(old_files):
    UserFactory(username="m09907s01", forward_port=10005)
    with pytest.raises(LegacyImportError) as caught:
        run_import(*old_files)
    assert (caught.value.file, caught.value.line) == ("users_config.yaml", 1)
    assert caught.value.reason == "forward_port 10005 of m11007s05 is already m09907s01's"
    assert not Host.objects.exists()
    assert list(User.objects.values_list("username", flat=True)) == ["m09907s01"]


@pytest.mark.django_db
def test_a_booked_row_that_would_publish_another_students_port_is_refused_with_its_row(tmp_path):
    # m11007s05's booking asks for m11107s01's port 10001: its container would take it.
    booking = HEADER + '2026-03-04 10:00:00,2026-03-05 10:00:00,m11007s05,2,8,"[0]",10001,null,null\n'
    cfg, jobs = write_old_system(tmp_path, booking=booking)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert [(problem.file, problem.line) for problem in caught.value.problems] == [("booking.csv", 2)]
    assert "Another account already uses this port" in caught.value.problems[0].message
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_every_row_the_services_refuse_is_listed(tmp_path):
    clash = '2026-03-02 12:00:00,2026-03-02 14:00:00,m11007s05,2,8,"[2]",null,null,null\n'
    booking = HEADER + GPU0_TWICE.replace("2025-03-01", "2026-03-10") + clash
    cfg, jobs = write_old_system(tmp_path, booking=booking)
    with pytest.raises(LegacyImportError) as caught:
        run_import(cfg, jobs)
    assert [(problem.file, problem.line) for problem in caught.value.problems] == [
        ("booking.csv", 3),
        ("booking.csv", 4),
    ]
    assert [
        "GPU 0 is already held" in caught.value.problems[0].message,
        "GPU 2 is already held" in caught.value.problems[1].message,
    ] == [True, True]
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_an_account_only_in_the_schedules_keeps_its_history_and_cannot_log_in(tmp_path):
    used = USED + "2025-02-01 10:00:00,2025-02-01 12:00:00,m10907s44,2,8,[],null,null,null\n"
    cfg, jobs = write_old_system(tmp_path, used=used)
    report = run_import(cfg, jobs)
    stranger = User.objects.get(username="m10907s44")
    assert not stranger.is_active
    assert not stranger.has_usable_password()
    assert stranger.reservations.get().status == Reservation.Status.ENDED
    assert "create user m10907s44 (only in the schedules: inactive)" in report.changes
    assert any("m10907s44 is in no config file" in note for note in report.notes)
    assert all(username != "m10907s44" for username, _ in report.one_time_passwords)


@pytest.mark.django_db
def test_no_password_reaches_a_log_or_the_report(old_files, caplog):
    caplog.set_level("DEBUG")
    report = run_import(*old_files, dry_run=True)
    run_import(*old_files)
    for secret in ("correct horse battery staple", "0000"):
        assert secret not in caplog.text
        assert secret not in repr(report)


@pytest.mark.django_db
def test_the_import_replaces_the_previous_default_image_through_the_image_service(old_files):
    ImageFactory(reference="lab/old:latest", is_default=True)
    report = run_import(*old_files)
    assert "update image lab/old:latest (is_default)" in report.changes
    assert list(Image.objects.filter(is_default=True).values_list("reference", flat=True)) == [
        "rober5566a/aivc-server:latest"
    ]


@pytest.mark.django_db
def test_the_command_lists_every_problem(tmp_path):
    using = USING.replace("python train.py", "python 'train.py")
    cfg, jobs = write_old_system(tmp_path, booking="start,end,user_id\n", using=using)
    with pytest.raises(CommandError) as caught:
        call_command(
            "import_aivc", "--cfg", str(cfg), "--jobs", str(jobs), "--host", "gpu-old", stdout=StringIO()
        )
    assert str(caught.value).splitlines() == [
        "Nothing was imported. using.csv, line 2: extra_command cannot be read as arguments "
        "(No closing quotation)",
        "1 more problem(s):",
        "  booking.csv, line 1: missing column(s): cpus, memory, gpus, forward_port, image, extra_command",
    ]
