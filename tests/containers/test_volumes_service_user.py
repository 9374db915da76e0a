"""The scheduler runs as the service's user (deploy/systemd), not root: the authorized_keys
file it writes must still belong to root, or sshd (StrictModes) refuses every key."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
WRITE_KEYS = (
    "import django; django.setup();"
    "from pathlib import Path; from containers.volumes import _write_new_file, FolderProblem\n"
    "try:\n"
    "    _write_new_file(Path(sys.argv[1]), 'authorized_keys', b'ssh-ed25519 AAAA a@b\\n',\n"
    "                    mode=0o644, root_owned=True)\n"
    "except FolderProblem as problem:\n"
    "    print(problem)\n"
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to become another user"
)


@pytest.fixture
def state_parent() -> Iterator[Path]:
    # Outside pytest's own 0700 temporary folders, which another user cannot enter.
    parent = Path(tempfile.mkdtemp(prefix="aivc-state-"))
    os.chmod(parent, 0o755)  # noqa: S103 (another user must reach the folder inside)
    yield parent
    shutil.rmtree(parent)


def write_as_service_user(folder: Path, *capabilities: str) -> subprocess.CompletedProcess:
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    caps = ",".join(f"+{cap}" for cap in capabilities) or "-all"
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            f"--inh-caps={caps}",
            f"--ambient-caps={caps}",
            sys.executable,
            "-c",
            "import sys;" + WRITE_KEYS,
            str(folder),
        ],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "aivc_portal.settings",
            "DEBUG": "1",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": f"sqlite:///{folder.parent / 'unused.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_service_user_with_cap_chown_gives_authorized_keys_to_root(state_parent):
    result = write_as_service_user(state_parent / "state", "chown")
    assert result.returncode == 0, result.stderr
    keys = (state_parent / "state" / "authorized_keys").stat()
    assert (keys.st_uid, keys.st_gid, keys.st_mode & 0o777) == (0, 0, 0o644)


def test_without_cap_chown_the_launch_says_what_the_scheduler_lacks(state_parent):
    result = write_as_service_user(state_parent / "state")
    assert result.returncode == 0, result.stderr
    assert "needs CAP_CHOWN" in result.stdout
    assert not (state_parent / "state" / "authorized_keys").exists()
