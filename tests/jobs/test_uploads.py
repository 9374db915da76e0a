"""Checking DoPQ zips before anything is built: every refusal names what is wrong."""

import io
import json
import tarfile
import tracemalloc
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from jobs.uploads import check_dockerfile, parse_upload
from tests.jobs.dopq_zips import DOCKERFILE, config, dopq_zip, make_zip


@pytest.fixture(autouse=True)
def english():
    """The messages are checked in English, whatever language an earlier test left active."""
    with translation.override("en"):
        yield


def refusal(data: bytes) -> str:
    with pytest.raises(ValidationError) as error:
        parse_upload(data)
    return " ".join(error.value.message_dict["upload"])


def context_names(upload) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(upload.context_file.getvalue())) as tar:
        return sorted(tar.getnames())


def test_it_reads_a_zip_with_its_files_at_the_root():
    upload = parse_upload(
        dopq_zip(required_memory="2048m", num_gpus=1, run_params={"command": ["python", "t.py"]})
    )
    assert (upload.name, upload.executor_name, upload.memory_gb, upload.gpu_count) == (
        "mnist",
        "m11007s05",
        2,
        1,
    )
    assert upload.command == "python t.py"
    assert context_names(upload) == ["Dockerfile", "container_config.json", "train.py"]


def test_it_reads_a_zip_with_its_files_in_one_folder_and_builds_from_that_folder():
    upload = parse_upload(dopq_zip(folder="project"))
    assert context_names(upload) == ["Dockerfile", "container_config.json", "train.py"]
    assert upload.command == ""  # the image's own CMD


def test_it_takes_dopqs_defaults_for_memory_and_gpus():
    upload = parse_upload(dopq_zip(required_memory=None, num_gpus=None))
    assert (upload.memory_gb, upload.gpu_count) == (20, 1)


def test_it_gives_the_same_context_the_same_digest():
    assert parse_upload(dopq_zip()).digest == parse_upload(dopq_zip()).digest


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"not a zip at all", "not a readable zip"),
        (make_zip({"Dockerfile": DOCKERFILE}), "needs a Dockerfile and container_config.json"),
        (make_zip({"a/b/Dockerfile": DOCKERFILE, "a/b/container_config.json": "{}"}), "needs a Dockerfile"),
        (
            make_zip(
                {
                    "a/Dockerfile": DOCKERFILE,
                    "a/container_config.json": json.dumps(config()),
                    "b/Dockerfile": DOCKERFILE,
                    "b/container_config.json": json.dumps(config()),
                }
            ),
            "more than one folder",
        ),
        (make_zip({"Dockerfile": DOCKERFILE, "container_config.json": "{nope"}), "not valid JSON"),
        (make_zip({"Dockerfile": DOCKERFILE, "container_config.json": "[1]"}), "one JSON object"),
        (dopq_zip(name="ab"), "name must be 3 to 64"),
        (dopq_zip(name="../../etc"), "name must be 3 to 64"),
        (dopq_zip(executor_name=None), "executor_name must be"),
        (dopq_zip(required_memory="lots"), "required_memory must look like"),
        (dopq_zip(required_memory="0g"), "at least 1 GB"),
        (dopq_zip(num_gpus=-1), "num_gpus must be"),
        (dopq_zip(num_gpus="2"), "num_gpus must be"),
        (dopq_zip(build_flag=False), "build_flag must be true"),
        (dopq_zip(colour="blue"), "unknown fields: colour"),
        (dopq_zip(run_params=[]), "run_params must be a JSON object"),
        (dopq_zip(run_params={"command": 3}), "run_params.command must be"),
        (dopq_zip(run_params={"detach_keys": "x"}), "unknown parameters: detach_keys"),
    ],
)
def test_it_refuses_a_bad_upload_saying_why(data, text):
    assert text in refusal(data)


@pytest.mark.parametrize("param", ["privileged", "volumes", "pid_mode", "network_mode", "cap_add", "devices"])
def test_it_refuses_run_params_that_would_reach_the_host_naming_them(param):
    text = refusal(dopq_zip(run_params={param: True, "command": "python t.py"}))
    assert f"may not set {param}" in text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("/etc/passwd", "absolute path"),
        ("../outside.txt", "“..”"),
        ("sub/../../x", "“..”"),
        ("C:/windows.txt", "absolute path"),
    ],
)
def test_it_refuses_paths_that_leave_the_context(name, text):
    files = {"Dockerfile": DOCKERFILE, "container_config.json": json.dumps(config()), name: "x"}
    assert text in refusal(make_zip(files))


def test_it_refuses_a_symlink_in_the_zip():
    files = {"Dockerfile": DOCKERFILE, "container_config.json": json.dumps(config())}
    assert "link or special file: data" in refusal(make_zip(files, links={"data": "/etc/shadow"}))


def test_it_refuses_a_zip_over_the_size_limit(settings):
    settings.JOB_UPLOAD_MAX_BYTES = 1000
    assert "larger than" in refusal(dopq_zip() + b"\0" * 1000)


def test_it_refuses_a_zip_that_unpacks_too_large(settings):
    settings.JOB_UPLOAD_MAX_UNPACKED_BYTES = 10_000
    files = {"Dockerfile": DOCKERFILE, "container_config.json": json.dumps(config()), "zeros": b"\0" * 20_000}
    assert "unpacks to more than" in refusal(make_zip(files))


def test_it_refuses_a_zip_with_too_many_files(settings):
    settings.JOB_UPLOAD_MAX_FILES = 5
    files = {"Dockerfile": DOCKERFILE, "container_config.json": json.dumps(config())}
    files.update({f"f{i}.txt": "x" for i in range(5)})
    assert "more than 5 files" in refusal(make_zip(files))


# The Dockerfile's images and fetches (issue 21, H1 and H2): one rule, tried as an attacker.

OWNER = "aivc-build/m11007s05/"
BASES = ["aivc-test/busybox:latest", "nvidia/cuda:12.2.0-base-ubuntu22.04", "python"]


def dockerfile_refusal(dockerfile: str) -> str:
    with pytest.raises(ValidationError) as error:
        check_dockerfile(dockerfile=dockerfile, owner_prefix=OWNER, bases=BASES)
    return " ".join(error.value.message_dict["upload"])


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM 9b764e\n",
        "FROM 9B764E\n",
        "FROM 9\n",
        "FROM 0ac4bc63fc23\n",
        "FROM sha256:9b764e\n",
        "FROM 9b764e:latest\n",
        "FROM --platform=linux/amd64 9b764e AS x\n",
        "FROM aivc-test/busybox:latest\nCOPY --from=9b764e /etc/secret /s\n",
        "FROM aivc-test/busybox:latest\nADD --from=9b764e /etc/secret /s\n",
        "FROM aivc-test/busybox:latest\nRUN --mount=type=bind,from=9b764e,target=/m cat /m/secret\n",
        "FROM aivc-test/busybox:latest\nRUN --mount=type=cache,target=/c,FROM=9b764e true\n",
        'FROM aivc-test/busybox:latest\nRUN --mount=type=bind,"from=9b764e",target=/m true\n',
        "FROM aivc-test/busybox:latest\nONBUILD COPY --from=9b764e /etc/secret /s\n",
        "FROM aivc-test/busybox:latest\nCOPY --from=1 /etc/secret /s\n",  # no stage 1: an id
        "FROM aivc-test/busybox:latest AS a\nFROM 0\n",
        "# syntax=9b764e\nFROM aivc-test/busybox:latest\n",
    ],
)
def test_an_image_id_or_id_prefix_is_refused_wherever_an_image_is_named(dockerfile):
    assert "by its id" in dockerfile_refusal(dockerfile)


@pytest.mark.parametrize(
    ("dockerfile", "text"),
    [
        ("FROM debian:bookworm\n", "not one of the lab's images"),
        ("FROM aivc-test/busybox:other\n", "not one of the lab's images"),
        ("FROM aivc-test/busybox:latest\nCOPY --from=alpine /bin/sh /x\n", "not one of the lab's images"),
        ("# syntax=docker/dockerfile:1\nFROM aivc-test/busybox:latest\n", "not one of the lab's images"),
        ("FROM aivc-build/m11007s06/mnist:0123456789ab\n", "built for someone else"),
        ('FROM "9b764e"\n', "quoting or an escape"),
        ("FROM 9b\\764e\n", "quoting or an escape"),
        ("ARG I=9b764e\nFROM $I\n", "through a variable"),
        ("FROM aivc-test/busybox:latest\nONBUILD FROM debian\n", "not one of the lab's images"),
    ],
)
def test_an_image_that_is_neither_a_lab_base_nor_the_users_own_is_refused(dockerfile, text):
    assert text in dockerfile_refusal(dockerfile)


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM aivc-test/busybox:latest\n",
        "FROM aivc-test/busybox\n",  # :latest is what the engine reads
        "FROM docker.io/library/python:latest\n",
        "FROM python\n",
        "FROM nvidia/cuda:12.2.0-base-ubuntu22.04 AS base\nFROM base\nCOPY --from=base /a /b\n",
        "FROM aivc-test/busybox AS abc\nFROM aivc-test/busybox\nCOPY --from=abc /a /b\nCOPY --from=0 /a /c\n",
        "FROM aivc-build/m11007s05/mnist:0123456789ab\n",
        "FROM scratch\nCOPY train.py /\n",
        "FROM aivc-test/busybox\nADD data.tar.gz /data/\nADD --chown=1:1 a b /dest/\n",
        'FROM aivc-test/busybox\nADD ["train.py", "/app/"]\n',
    ],
)
def test_lab_bases_own_builds_and_earlier_stages_are_allowed(dockerfile):
    check_dockerfile(dockerfile=dockerfile, owner_prefix=OWNER, bases=BASES)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("ADD http://127.0.0.1:8000/secret /s", "may not fetch http://127.0.0.1:8000/secret"),
        ("ADD HTTPS://example.org/x /x", "may not fetch"),
        ("ADD --chown=0:0 https://10.0.0.5/x /x", "may not fetch"),
        ('ADD ["http://127.0.0.1:8000/secret", "/s"]', "may not fetch"),
        ("ADD git@github.com:someone/repo.git /r", "may not fetch"),
        ("ADD https://github.com/someone/repo.git#main /r", "may not fetch"),
        ("ARG U=http://127.0.0.1:8000/\nADD $U /s", "uses a variable"),
        ("ADD ht\\tp://127.0.0.1:8000/ /s", "an escape"),
        ("ONBUILD ADD http://127.0.0.1:8000/ /s", "may not fetch"),
    ],
)
def test_add_may_not_fetch_from_the_network_or_a_remote(line, text):
    assert text in dockerfile_refusal(f"FROM aivc-test/busybox:latest\n{line}\n")


def zip_bomb(unpacked: int) -> bytes:
    """A DoPQ zip with one file of zeros: about a thousandth of its unpacked size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("Dockerfile", DOCKERFILE)
        archive.writestr("container_config.json", json.dumps(config()))
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            chunk = b"\0" * 2**20
            for _ in range(unpacked // len(chunk)):
                member.write(chunk)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_from_its_directory_before_anything_is_unpacked(settings):
    settings.JOB_UPLOAD_MAX_UNPACKED_BYTES = 100 * 2**20
    settings.JOB_UPLOAD_MAX_RATIO = 100
    bomb = zip_bomb(99 * 2**20)
    assert len(bomb) < 200_000
    into = io.BytesIO()
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as error:
            parse_upload(bomb, into=into)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "times its size" in " ".join(error.value.message_dict["upload"])
    assert into.getvalue() == b""  # nothing stored
    assert peak < 5 * 2**20  # the web worker's memory stays flat (loosely)


def test_a_large_context_is_streamed_in_chunks_not_held_in_memory(settings, tmp_path):
    settings.JOB_UPLOAD_MAX_RATIO = 10_000
    data = zip_bomb(40 * 2**20)
    tracemalloc.start()
    try:
        with (tmp_path / "context.tar").open("wb") as into:
            upload = parse_upload(data, into=into)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.context_size == (tmp_path / "context.tar").stat().st_size > 40 * 2**20
    assert peak < 8 * 2**20


def test_a_zip_whose_entry_lies_about_its_size_is_refused():
    data = bytearray(dopq_zip())
    # The central directory's size of train.py says 1 byte: reading stops there and the CRC fails.
    real = len("print('training')\n").to_bytes(4, "little")
    at = data.rfind(real)
    data[at : at + 4] = (1).to_bytes(4, "little")
    with pytest.raises(ValidationError):
        parse_upload(bytes(data))
