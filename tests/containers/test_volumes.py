import os
from pathlib import Path

import pytest

from containers.volumes import FolderProblem, prepare_mounts
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


def test_a_symlink_planted_in_the_backup_folder_is_never_mounted(reservation, roots, tmp_path):
    persisted = roots["backup"] / "m11007s05" / ".aivc" / "home"
    persisted.mkdir(parents=True)
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    (persisted / ".gitconfig").symlink_to(secret)
    with pytest.raises(FolderProblem, match="symbolic link"):
        prepare_mounts(reservation)


def test_a_username_that_is_not_a_plain_folder_name_is_refused(reservation):
    reservation.user.username = ".."
    with pytest.raises(FolderProblem, match="cannot be used as a folder name"):
        prepare_mounts(reservation)
