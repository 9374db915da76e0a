"""The legacy parser alone: files in, frozen records and line-numbered problems out. No
test here has database access (pytest-django refuses it), which is the point: parsing
reads files only."""

import dataclasses
from decimal import Decimal

import pytest

from bookings.legacy_import import parse_legacy
from bookings.legacy_import import reading as reading_module
from tests.bookings.legacy_files import (
    CAPABILITY,
    HEADER,
    HOST_DEPLOY,
    USED,
    USERS,
    USING,
    write_old_system,
)
from tests.factories import local


def parse(tmp_path, **files):
    cfg, jobs = write_old_system(tmp_path, **files)
    return parse_legacy(cfg_dir=cfg, jobs_dir=jobs)


def errors_of(result) -> list[tuple[str, int | None]]:
    return [(problem.file, problem.line) for problem in result.errors]


def only_error(result):
    [problem] = result.errors
    assert result.data is None
    return problem


def test_good_files_become_frozen_records(tmp_path):
    result = parse(tmp_path)
    assert result.errors == ()
    data = result.data
    assert (data.host.cpus, data.host.ram_gb, data.host.swap_gb, data.host.gpus) == (62, 30, 10, 4)
    assert data.host.work_root == "/mnt/Users"
    assert [(image.reference, image.listed, image.is_default) for image in data.images] == [
        ("rober5566a/aivc-server:latest", True, True),
        ("rober5566a/aivc-server:cuda11.8.0-cudnn8-devel-ubuntu20.04", True, False),
        ("rober5566a/aivc-server:cuda10-old", False, False),  # named only by used.csv
    ]
    assert data.default_profile.limits() == {
        "cpus": Decimal(8),
        "memory_gb": 32,
        "gpus": 1,
        "work_space_gb": 200,
        "backup_space_gb": 50,
    }
    [custom] = data.profiles
    assert (custom.name, custom.cpus, custom.memory_gb, custom.gpus, custom.backup_space_gb) == (
        "legacy-m11107s01",
        62,  # max: the host's
        36,
        None,  # missing: the default's
        200,
    )
    users = {user.username: user for user in data.users}
    assert sorted(users) == ["m11007s05", "m11107s01", "m11207s09"]
    assert users["m11107s01"].forward_port == 10001
    assert users["m11107s01"].profile == "legacy-m11107s01"
    assert users["m11207s09"].password is None and users["m11207s09"].allowed
    with pytest.raises(dataclasses.FrozenInstanceError):
        users["m11007s05"].forward_port = 1


def test_the_schedules_become_reservation_records_with_their_status(tmp_path):
    rows = parse(tmp_path).data.reservations
    assert [(row.file, row.line, row.status, row.username) for row in rows] == [
        ("used.csv", 2, "ended", "m11007s05"),
        ("used.csv", 3, "ended", "m11107s01"),
        ("using.csv", 2, "running", "m11107s01"),
        ("booking.csv", 2, "scheduled", "m11007s05"),
    ]
    first = rows[0]
    assert (first.start, first.end) == (local(2025, 1, 1, 13, 30), local(2025, 1, 4, 13, 30))
    assert first.gpu_indices == (0, 1)
    assert first.image == "rober5566a/aivc-server:latest"  # null: the default image
    assert rows[2].forward_port is None  # null: the user's own port
    assert rows[1].cpus == Decimal("4.5")


def test_a_password_never_shows_in_a_records_repr(tmp_path):
    data = parse(tmp_path).data
    assert "correct horse battery staple" not in repr(data)
    assert "0000" not in repr(data.users)


def test_every_problem_is_collected_instead_of_stopping_at_the_first(tmp_path):
    used = USED + '2025-02-01 10:00:00,2025-02-01 12:00:00,m11007s05,2,8,"[0, one]",null,null,null\n'
    using = HEADER + "2026-03-02 09:00:00,yesterday,m11107s01,-1,36,[2],null,null,null\n"
    result = parse(tmp_path, capability=CAPABILITY.replace("cpus: 62", "cpus: many"), used=used, using=using)
    assert result.data is None
    assert errors_of(result) == [
        ("capability_config.yaml", 2),
        ("used.csv", 4),
        ("using.csv", 2),
        ("using.csv", 2),
    ]
    assert [problem.field for problem in result.errors] == ["max.cpus", "gpus", "end", "cpus"]


# The malformed inputs the import tests cover, found by the parser alone ------------------


def test_a_bad_gpu_list_names_its_row(tmp_path):
    used = USED + '2025-02-01 10:00:00,2025-02-01 12:00:00,m11007s05,2,8,"[0, one]",null,null,null\n'
    problem = only_error(parse(tmp_path, used=used))
    assert (problem.file, problem.line, problem.field) == ("used.csv", 4, "gpus")
    assert "is not a list like [0, 1]" in problem.message


@pytest.mark.parametrize(
    ("written", "kind"), [("password: 0000", "a number"), ("password: yes", "true/false")]
)
def test_a_password_yaml_reads_as_no_text_is_refused_without_showing_it(tmp_path, written, kind):
    problem = only_error(parse(tmp_path, users=USERS.replace('password: "0000"', written)))
    assert (problem.file, problem.line, problem.field) == ("users_config.yaml", 11, "password")
    assert kind in problem.message and "quotes" in problem.message
    assert written.split()[1] not in str(problem)


@pytest.mark.parametrize(
    ("capability", "line", "reason"),
    [
        (CAPABILITY.replace("ram + swap_size", "__import__('os').system('true')"), 8, "max.memory"),
        (CAPABILITY.replace("memory: ram + swap_size", "memory: 1e999"), 8, "not a finite number"),
        (CAPABILITY.replace("ram / (ram + swap_size)", "ram * 1e308 * 10"), 7, "not a finite number"),
        (CAPABILITY.replace("cpus: 62", "cpus: many"), 2, "max.cpus"),
        (CAPABILITY.replace("memory: 36", "memory: lots"), 29, "memory"),
        (CAPABILITY.replace("ram: 30 # GB", "ram: 30: 31"), 3, "not valid YAML"),
        (CAPABILITY.replace("memory: 36", "memory: 36\n    disk: 9"), 30, "unknown key"),
    ],
)
def test_a_bad_config_value_names_its_line(tmp_path, capability, line, reason):
    problem = only_error(parse(tmp_path, capability=capability))
    assert (problem.file, problem.line) == ("capability_config.yaml", line)
    assert reason in problem.message


def test_two_users_with_one_port_are_refused(tmp_path):
    problem = only_error(parse(tmp_path, users=USERS.replace("forward_port: 10001", "forward_port: 10005")))
    assert "forward_port 10005" in problem.message


def test_a_port_outside_the_range_is_refused(tmp_path):
    problem = only_error(parse(tmp_path, users=USERS.replace("forward_port: 10001", "forward_port: 22")))
    assert (problem.line, problem.field) == (12, "forward_port")
    assert "outside PORT_RANGE" in problem.message


def test_a_missing_column_names_the_header(tmp_path):
    problem = only_error(parse(tmp_path, booking="start,end,user_id\n"))
    assert (problem.file, problem.line) == ("booking.csv", 1)
    assert "missing column(s): cpus, memory, gpus" in problem.message


def test_commands_the_launch_could_not_split_are_refused(tmp_path):
    result = parse(
        tmp_path,
        using=USING.replace("python train.py", "python 'train.py"),
        users=USERS.replace("extra_command: jupyter lab", 'extra_command: "lab \\\\"'),
    )
    assert errors_of(result) == [("users_config.yaml", 14), ("using.csv", 2)]
    assert "extra_command of m11107s01 cannot be read as arguments" in result.errors[0].message
    assert "(No closing quotation)" in result.errors[1].message


def test_missing_folders_and_files_are_said(tmp_path):
    result = parse_legacy(cfg_dir=tmp_path / "nope", jobs_dir=tmp_path / "nada")
    assert [problem.message for problem in result.errors] == [
        "the --cfg folder does not exist",
        "the --jobs folder does not exist",
    ]
    cfg, jobs = write_old_system(tmp_path)
    (cfg / "host_deploy.yaml").unlink()
    (jobs / "booking.csv").unlink()
    result = parse_legacy(cfg_dir=cfg, jobs_dir=jobs)
    assert [str(problem) for problem in result.errors] == [f"host_deploy.yaml: file not found in {cfg}"]
    assert [str(problem) for problem in result.warnings] == [f"booking.csv: not found in {jobs}, skipped."]


def test_a_memory_that_is_not_ram_plus_swap_is_a_warning(tmp_path):
    result = parse(tmp_path, capability=CAPABILITY.replace("memory: ram + swap_size", "memory: 48"))
    assert result.errors == ()
    [warning] = result.warnings
    assert (warning.line, warning.is_error) == (8, False)
    assert "max.memory is 48 GB but ram + swap_size is 40 GB" in warning.message


# Hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch /tmp/aivc-pwned']",
        "!!python/object:builtins.object {}",
        "!!python/name:os.system",
    ],
)
def test_yaml_tags_that_build_objects_are_refused(tmp_path, tag):
    problem = only_error(parse(tmp_path, users=USERS.replace("image: null", f"image: {tag}")))
    assert (problem.file, problem.line) == ("users_config.yaml", 4)
    assert "not valid YAML" in problem.message
    assert not (tmp_path / "aivc-pwned").exists()


def test_anchors_and_aliases_are_refused_so_a_small_file_cannot_explode(tmp_path):
    laughs = (
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    )
    problem = only_error(parse(tmp_path, users=laughs))
    assert problem.file == "users_config.yaml"
    assert "anchors and aliases" in problem.message


def test_a_file_that_is_not_utf8_names_the_line_of_the_bad_byte(tmp_path):
    cfg, jobs = write_old_system(tmp_path)
    (jobs / "used.csv").write_bytes(
        USED.encode() + "2025-02-01 10:00:00,x,m\xfcller,1,1,[],null,null,null\n".encode("latin-1")
    )
    problem = only_error(parse_legacy(cfg_dir=cfg, jobs_dir=jobs))
    assert (problem.file, problem.line) == ("used.csv", 4)
    assert "not UTF-8 text (byte 0xfc)" in problem.message


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(reading_module, "MAX_CSV_BYTES", 1024)
    problem = only_error(parse(tmp_path, used=USED + USED.removeprefix(HEADER) * 20))
    assert problem.file == "used.csv"
    assert "more than the 1 KiB allowed" in problem.message


def test_a_huge_history_is_parsed_with_a_bounded_list_of_problems(tmp_path):
    bad_rows = "".join(
        f"2025-01-{1 + n % 28:02d} 10:00:00,never,m11007s05,1,1,[],null,null,null\n" for n in range(5000)
    )
    result = parse(tmp_path, used=HEADER + bad_rows)
    assert len(result.errors) == reading_module.MAX_PROBLEMS + 1
    assert result.errors[-1].message == f"{5000 - reading_module.MAX_PROBLEMS} more error(s) not shown"


@pytest.mark.parametrize(
    ("cells", "column", "reason"),
    [
        (
            "01/03/2025 10:00,2025-03-01 12:00:00,m11007s05,1,1,[],null,null,null",
            "start",
            "not a date and time",
        ),
        (
            "2025-03-01 10:00:00,2025-13-01 12:00:00,m11007s05,1,1,[],null,null,null",
            "end",
            "not a date and time",
        ),
        (
            "2025-03-01 12:00:00,2025-03-01 10:00:00,m11007s05,1,1,[],null,null,null",
            "end",
            "end must be after start",
        ),
        (
            "2025-03-01 10:00:00,2025-03-01 12:00:00,../root,1,1,[],null,null,null",
            "user_id",
            "bad account id",
        ),
        ("2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1e999,1,[],null,null,null", "cpus", "above 0"),
        (
            "2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1,99999999999,[],null,null,null",
            "memory",
            "far too large",
        ),
        (
            '2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1,1,"[0, 0]",null,null,null',
            "gpus",
            "names a GPU twice",
        ),
        (
            '2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1,1,"[7]",null,null,null',
            "gpus",
            "GPU 7 does not exist",
        ),
        (
            '2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1,1,"' + "[" * 300 + '",null,null,null',
            "gpus",
            "characters long",
        ),
        (
            "2025-03-01 10:00:00,2025-03-01 12:00:00,m11007s05,1,1,\"__import__('os')\",null,null,null",
            "gpus",
            "not a list",
        ),
    ],
)
def test_a_bad_cell_names_its_row_and_column(tmp_path, cells, column, reason):
    problem = only_error(parse(tmp_path, used=HEADER + cells + "\n"))
    assert (problem.file, problem.line, problem.field) == ("used.csv", 2, column)
    assert reason in problem.message


def test_a_row_with_the_wrong_number_of_cells_is_refused(tmp_path):
    problem = only_error(parse(tmp_path, used=HEADER + "2025-03-01 10:00:00,m11007s05\n"))
    assert (problem.line, problem.message) == (2, "expected 9 cells, found 2")


def test_the_same_reservation_twice_is_refused_with_both_rows(tmp_path):
    booking = HEADER + USING.removeprefix(HEADER)
    problem = only_error(parse(tmp_path, booking=booking))
    assert (problem.file, problem.line) == ("booking.csv", 2)
    assert problem.message == "the same reservation as using.csv line 2"


def test_a_user_written_twice_in_users_config_is_refused(tmp_path):
    twice = USERS + '\nm11007s05:\n  password: "other"\n  forward_port: 10009\n'
    problem = only_error(parse(tmp_path, users=twice))
    assert (problem.file, problem.line) == ("users_config.yaml", 19)
    assert "'m11007s05' is written twice (also on line 1)" in problem.message


def test_one_account_under_two_spellings_is_refused(tmp_path):
    twice = USERS + '\nM11007S05:\n  password: "other"\n'
    problem = only_error(parse(tmp_path, users=twice))
    assert problem.line == 19
    assert problem.message == "m11007s05 has a second entry (the first is on line 1)"


def test_a_row_of_an_account_no_config_names_is_kept_as_history_with_a_warning(tmp_path):
    used = USED + "2025-02-01 10:00:00,2025-02-01 12:00:00,m10907s44,2,8,[],null,null,null\n"
    result = parse(tmp_path, used=used)
    assert result.errors == ()
    stranger = next(user for user in result.data.users if user.username == "m10907s44")
    assert not stranger.in_config and not stranger.allowed and stranger.password is None
    [warning] = result.warnings
    assert (warning.file, warning.line) == ("used.csv", 4)
    assert "m10907s44 is in no config file" in warning.message


def test_an_empty_image_list_and_missing_roots_are_each_named(tmp_path):
    deploy = HOST_DEPLOY.replace("volume_backup_dir: /mnt/Backup\n", "").split("images:")[0] + "images: []\n"
    result = parse(tmp_path, host_deploy=deploy)
    assert [(problem.line, problem.field) for problem in result.errors] == [
        (1, "volume_backup_dir"),
        (7, "images"),
    ]
