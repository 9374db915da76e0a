import contextlib
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from containers.volumes import FolderProblem, home_folder, prepare_job_mounts, prepare_mounts, state_root
from tests.factories import ReservationFactory, UserFactory


@pytest.fixture
def reservation(engine_host, window, default_profile):
    user = UserFactory(
        username="m11007s05", ssh_public_keys="ssh-ed25519 AAAA one\n# comment\n\nssh-rsa BBBB two"
    )
    return ReservationFactory(user=user, host=engine_host, **window)


def test_it_creates_the_users_folders_and_writes_only_the_keys(reservation, roots):
    mounts = {mount.target: mount for mount in prepare_mounts(reservation)}
    assert (roots["work"] / "m11007s05").is_dir()
    assert (roots["backup"] / "m11007s05").is_dir()
    keys_file = mounts["/root/.ssh/authorized_keys"].source
    assert Path(keys_file).read_text() == "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"
    assert not keys_file.startswith(str(roots["backup"] / "m11007s05"))


def test_host_keys_are_made_once_and_kept(reservation):
    first = {m.target: m.source for m in prepare_mounts(reservation)}
    key = first["/etc/ssh/ssh_host_ed25519_key"]
    content = Path(key).read_text()
    again = {m.target: m.source for m in prepare_mounts(reservation)}
    assert Path(again["/etc/ssh/ssh_host_ed25519_key"]).read_text() == content
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"


def test_the_home_is_mounted_at_root_with_the_users_folders_inside_it(reservation, roots):
    mounts = {mount.target: mount for mount in prepare_mounts(reservation)}
    home = roots["backup"] / ".aivc-home" / "m11007s05"
    assert mounts["/root"].source == str(home) and not mounts["/root"].read_only
    assert mounts["/root/Work"].source == str(roots["work"] / "m11007s05")
    assert mounts["/root/Backup"].source == str(roots["backup"] / "m11007s05")
    # The engine finds every mount point inside the home made already, as real folders.
    for point in ("Work", "Backup", "Dataset", ".ssh"):
        assert (home / point).is_dir() and not (home / point).is_symlink()
    assert (home / ".ssh" / "authorized_keys").is_file()
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_a_home_and_ssh_folder_opened_to_everyone_are_made_private_again(reservation, roots):
    prepare_mounts(reservation)
    home = roots["backup"] / ".aivc-home" / "m11007s05"
    home.chmod(0o777)
    (home / ".ssh").chmod(0o777)
    prepare_mounts(reservation)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / ".ssh").st_mode) == 0o700


def test_the_home_root_is_a_setting(reservation, tmp_path, settings):
    settings.CONTAINER_HOME_ROOT = str(tmp_path / "homes")
    mounts = {mount.target: mount for mount in prepare_mounts(reservation)}
    assert mounts["/root"].source == str(tmp_path / "homes" / "m11007s05")
    assert home_folder(reservation.host, "m11007s05") == tmp_path / "homes" / "m11007s05"


def test_a_jobs_container_gets_the_same_home(reservation, roots):
    mounts = {mount.target: mount for mount in prepare_job_mounts(reservation, job_id=7)}
    assert mounts["/root"].source == str(roots["backup"] / ".aivc-home" / "m11007s05")
    assert (roots["work"] / "m11007s05" / "jobs" / "7").is_dir()
    assert "/root/.ssh/authorized_keys" not in mounts


def test_dotfiles_the_old_portal_kept_move_into_the_home_once(reservation, roots):
    old = roots["backup"] / "m11007s05" / ".aivc" / "home"
    (old / ".config" / "fish").mkdir(parents=True)
    (old / ".gitconfig").write_text("[user]\n  name = student\n")
    home = roots["backup"] / ".aivc-home" / "m11007s05"
    home.mkdir(parents=True)
    (home / ".local").mkdir()
    (home / ".local" / "kept").write_text("newer")
    (old / ".local").mkdir()
    prepare_mounts(reservation)
    assert (home / ".config" / "fish").is_dir()
    assert (home / ".gitconfig").read_text().startswith("[user]")
    assert (home / ".local" / "kept").read_text() == "newer"  # the home's own copy wins
    assert (old / ".local").is_dir()


def test_a_link_planted_among_the_old_dotfiles_is_moved_as_a_link_never_followed(
    reservation, roots, tmp_path
):
    old = roots["backup"] / "m11007s05" / ".aivc" / "home"
    old.mkdir(parents=True)
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    (old / ".gitconfig").symlink_to(secret)
    mounts = prepare_mounts(reservation)
    assert secret.read_text() == "host only"
    assert all(not os.path.realpath(m.source).startswith(str(secret)) for m in mounts)
    assert (roots["backup"] / ".aivc-home" / "m11007s05" / ".gitconfig").is_symlink()


@pytest.mark.parametrize("point", ["Work", "Backup", "Dataset", ".ssh"])
def test_a_link_at_a_mount_point_inside_the_home_is_refused(reservation, roots, outside, point):
    home = roots["backup"] / ".aivc-home" / "m11007s05"
    home.mkdir(parents=True)
    (home / point).symlink_to(outside)
    with pytest.raises(FolderProblem, match="symbolic link"):
        prepare_mounts(reservation)


def test_the_online_cpu_file_shows_the_booked_cpus_rounded_up(reservation, settings):
    settings.CONTAINER_CPUSET = True
    reservation.cpus = "1.5"
    online = {m.target: m for m in prepare_mounts(reservation)}["/sys/devices/system/cpu/online"]
    assert online.read_only and Path(online.source).read_text() == "0-1\n"
    assert Path(online.source).is_relative_to(state_root(reservation.host))


def test_without_pinning_no_online_cpu_file_is_mounted(reservation, settings):
    settings.CONTAINER_CPUSET = False
    assert "/sys/devices/system/cpu/online" not in {m.target for m in prepare_mounts(reservation)}


def test_a_username_that_is_not_a_plain_folder_name_is_refused(reservation):
    reservation.user.username = ".."
    with pytest.raises(FolderProblem, match="cannot be used as a folder name"):
        prepare_mounts(reservation)


# --- A student is root in her container and controls every name under her folders. ---

USER = "m11007s05"
OLD_HOME = f"backup/{USER}/.aivc/home"
HOME = f"backup/.aivc-home/{USER}"
LEGACY_KEYS = f"backup/{USER}/.aivc/ssh_host_keys"
FOLDERS_THE_PORTAL_TOUCHES = [
    f"work/{USER}",
    f"work/{USER}/jobs",
    f"backup/{USER}",
    f"backup/{USER}/.aivc",
    OLD_HOME,
    f"{OLD_HOME}/.config",
    f"{OLD_HOME}/.local",
    f"{OLD_HOME}/.vscode-server",
    HOME,
    f"{HOME}/Work",
    f"{HOME}/Backup",
    f"{HOME}/Dataset",
    f"{HOME}/.ssh",
    f"{HOME}/.config",
    LEGACY_KEYS,
]
FILES_THE_PORTAL_TOUCHES = [
    f"{OLD_HOME}/.bash_history",
    f"{OLD_HOME}/.zsh_history",
    f"{OLD_HOME}/.gitconfig",
    f"{HOME}/.ssh/authorized_keys",
    f"{HOME}/.gitconfig",
    f"{LEGACY_KEYS}/ssh_host_ed25519_key",
    f"{LEGACY_KEYS}/ssh_host_ed25519_key.pub",
    f"{LEGACY_KEYS}/ssh_host_ecdsa_key",
    f"{LEGACY_KEYS}/ssh_host_ecdsa_key.pub",
]


@pytest.fixture
def outside(tmp_path):
    """Another user's files and a host folder, which nothing may change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "authorized_keys").write_text("ssh-ed25519 AAAA victim\n")
    (folder / "authorized_keys").chmod(0o644)
    return folder


def snapshot(folder: Path) -> dict:
    return {
        str(path.relative_to(folder)): (path.is_dir() or path.read_bytes(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def no_hang():
    """A FIFO opened for reading or writing blocks forever; fail instead of hanging."""

    def timed_out(signum, frame):
        raise TimeoutError("prepare_mounts blocked")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def plant(path: Path, kind: str, outside: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "link-to-folder":
        path.symlink_to(outside)
    elif kind == "link-to-file":
        path.symlink_to(outside / "authorized_keys")
    elif kind == "dangling-link":
        path.symlink_to(outside / "new-file")
    elif kind == "plain-file":
        path.write_text("not a folder")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()


PLANTS = [
    *[
        (path, kind)
        for path in FOLDERS_THE_PORTAL_TOUCHES
        for kind in ("link-to-folder", "dangling-link", "plain-file")
    ],
    *[
        (path, kind)
        for path in FILES_THE_PORTAL_TOUCHES
        for kind in ("link-to-file", "dangling-link", "fifo", "folder")
    ],
]


@pytest.mark.parametrize(("planted", "kind"), PLANTS, ids=[f"{path}:{kind}" for path, kind in PLANTS])
def test_nothing_planted_in_a_users_folders_makes_the_portal_write_outside_them(
    reservation, roots, outside, planted, kind, no_hang
):
    # The user's folders exist from an earlier reservation; then the student plants.
    prepare_mounts(reservation)
    plant(roots["work"].parent / planted, kind, outside)
    before = snapshot(outside)

    try:
        mounts = prepare_mounts(reservation) + prepare_job_mounts(reservation, job_id=1)
    except FolderProblem as problem:
        assert "symbolic link or not what the portal expects" in str(problem)
    else:
        for mount in mounts:
            assert not os.path.realpath(mount.source).startswith(str(outside)), mount

    assert snapshot(outside) == before
    assert not (outside / "new-file").exists()


def test_a_host_key_link_to_another_users_authorized_keys_changes_nothing(
    engine_host, window, roots, no_hang
):
    """The reported attack: ssh-keygen wrote <key>.pub through the student's symlink."""
    victim = ReservationFactory(
        user=UserFactory(username="victim", ssh_public_keys="ssh-ed25519 AAAA victim"),
        host=engine_host,
        **window,
    )
    victim_keys = Path({m.target: m.source for m in prepare_mounts(victim)}["/root/.ssh/authorized_keys"])
    attacker = ReservationFactory(user=UserFactory(username="attacker"), host=engine_host, **window)
    legacy = roots["backup"] / "attacker" / ".aivc" / "ssh_host_keys"
    legacy.mkdir(parents=True)
    (legacy / "ssh_host_ecdsa_key.pub").symlink_to(victim_keys)

    with contextlib.suppress(FolderProblem):
        prepare_mounts(attacker)

    assert victim_keys.read_text() == "ssh-ed25519 AAAA victim\n"


def test_the_portals_own_files_live_outside_the_users_folders_and_are_private(reservation, roots):
    mounts = {mount.target: mount for mount in prepare_mounts(reservation)}
    state = state_root(reservation.host)
    for target in (
        "/root/.ssh/authorized_keys",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ecdsa_key",
    ):
        assert mounts[target].read_only
        assert Path(mounts[target].source).is_relative_to(state)
        assert not Path(mounts[target].source).is_relative_to(roots["backup"] / USER)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / USER).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(roots["work"] / USER).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(roots["backup"] / USER).st_mode) == 0o700


def test_user_folders_made_public_by_the_old_portal_become_private(reservation, roots):
    (roots["work"] / USER).mkdir(mode=0o755)
    prepare_mounts(reservation)
    assert stat.S_IMODE(os.stat(roots["work"] / USER).st_mode) == 0o700


def test_host_keys_from_the_old_location_are_adopted_once(reservation, roots):
    legacy = roots["backup"] / USER / ".aivc" / "ssh_host_keys"
    legacy.mkdir(parents=True)
    for key_type in ("ed25519", "ecdsa"):
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                key_type,
                "-N",
                "",
                "-C",
                "",
                "-f",
                str(legacy / f"ssh_host_{key_type}_key"),
            ],
            check=True,
        )
    mounts = {m.target: Path(m.source) for m in prepare_mounts(reservation)}
    for key_type in ("ed25519", "ecdsa"):
        name = f"ssh_host_{key_type}_key"
        assert mounts[f"/etc/ssh/{name}"].read_bytes() == (legacy / name).read_bytes()
        assert (
            mounts[f"/etc/ssh/{name}.pub"].read_text().split()[:2]
            == (legacy / f"{name}.pub").read_text().split()[:2]
        )
    # Once adopted, the user's copies no longer matter.
    (legacy / "ssh_host_ed25519_key").write_text("garbage")
    again = {m.target: Path(m.source) for m in prepare_mounts(reservation)}
    assert again["/etc/ssh/ssh_host_ed25519_key"].read_bytes() != b"garbage"


def test_an_oversized_or_broken_old_host_key_is_replaced_by_a_new_one(reservation, roots):
    legacy = roots["backup"] / USER / ".aivc" / "ssh_host_keys"
    legacy.mkdir(parents=True)
    (legacy / "ssh_host_ed25519_key").write_bytes(b"x" * 100_000)
    (legacy / "ssh_host_ecdsa_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    mounts = {m.target: Path(m.source) for m in prepare_mounts(reservation)}
    for key_type in ("ed25519", "ecdsa"):
        public = mounts[f"/etc/ssh/ssh_host_{key_type}_key.pub"].read_text()
        assert public.startswith(("ssh-ed25519 ", "ecdsa-sha2-nistp256 "))
