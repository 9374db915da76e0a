"""Checking DoPQ zips before anything is built: every refusal names what is wrong."""

import io
import json
import tarfile

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from jobs.uploads import parse_upload
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
