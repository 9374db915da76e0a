"""Builds DoPQ zips for the upload tests."""

from __future__ import annotations

import io
import json
import stat
import zipfile

from tests.images import TEST_IMAGE

DOCKERFILE = (
    f"FROM {TEST_IMAGE}\n"
    "RUN echo built in the image > /built.txt\n"
    'CMD ["sh", "-c", "cat /built.txt; echo hello from dopq"]\n'
)


def config(**changes) -> dict:
    values = {
        "name": "mnist",
        "executor_name": "m11007s05",
        "required_memory": "1g",
        "num_gpus": 0,
        "build_flag": True,
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


def make_zip(files: dict[str, bytes | str], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def dopq_zip(*, folder: str = "", dockerfile: str = DOCKERFILE, **config_changes) -> bytes:
    prefix = f"{folder}/" if folder else ""
    return make_zip(
        {
            f"{prefix}Dockerfile": dockerfile,
            f"{prefix}container_config.json": json.dumps(config(**config_changes)),
            f"{prefix}train.py": "print('training')\n",
        }
    )
