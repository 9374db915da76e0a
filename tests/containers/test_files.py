"""A user's Work folder from the browser (containers/files.py), tried as the attacker: a
student is root in her container and plants links, FIFOs and odd names in her folder."""

import io
import os
import signal
import zipfile
from pathlib import Path

import pytest

from containers import files
from tests.factories import host_with_roots

USER = "m11007s05"


@pytest.fixture
def host(db, tmp_path):
    return host_with_roots(tmp_path / "roots", name="gpu-files")


@pytest.fixture
def work(host) -> Path:
    folder = Path(host.work_root) / USER
    folder.mkdir(mode=0o700)
    (folder / "results").mkdir()
    (folder / "results" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    return folder


@pytest.fixture
def victim(host) -> Path:
    """Another student's Work folder, and a host file: nothing may reach them."""
    folder = Path(host.work_root) / "victim"
    folder.mkdir(mode=0o700)
    (folder / "thesis.tex").write_text("the victim's thesis\n")
    return folder


@pytest.fixture
def no_hang():
    def timed_out(signum, frame):
        raise TimeoutError("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def read(host, path: str) -> bytes:
    handle, size, _name = files.open_file(host=host, username=USER, path=path)
    with handle:
        data = handle.read()
    assert len(data) == size
    return data


def test_it_lists_folders_first_and_reads_a_file(host, work):
    (work / "a.txt").write_text("a")
    listing = files.list_folder(host=host, username=USER, path="")
    assert [(entry.name, entry.kind) for entry in listing.entries] == [
        ("results", "folder"),
        ("a.txt", "file"),
    ]
    assert read(host, "results/metrics.csv") == b"epoch,loss\n1,0.5\n"
    assert files.list_folder(host=host, username=USER, path="/results/".strip("/")).path == "results"


@pytest.mark.parametrize(
    "path",
    [
        "../victim/thesis.tex",
        "results/../../victim/thesis.tex",
        "/etc/passwd",
        "./results/metrics.csv",
        "a\x00b",
    ],
)
def test_a_path_that_leaves_the_folder_is_not_found(host, work, victim, path):
    with pytest.raises(files.NotFound):
        read(host, path)
    with pytest.raises(files.NotFound):
        files.list_folder(host=host, username=USER, path=path.rsplit("/", 1)[0])


def test_a_link_to_another_students_folder_is_listed_never_followed(host, work, victim):
    (work / "theirs").symlink_to(victim)
    (work / "thesis.tex").symlink_to(victim / "thesis.tex")
    (work / "passwd").symlink_to("/etc/passwd")
    kinds = {entry.name: entry.kind for entry in files.list_folder(host=host, username=USER, path="").entries}
    assert kinds["theirs"] == kinds["thesis.tex"] == kinds["passwd"] == "link"
    for path in ("theirs/thesis.tex", "thesis.tex", "passwd"):
        with pytest.raises(files.NotFound):
            read(host, path)
    with pytest.raises(files.NotFound):
        files.list_folder(host=host, username=USER, path="theirs")


def test_a_link_in_place_of_the_users_own_folder_is_not_followed(host, victim):
    (Path(host.work_root) / USER).symlink_to(victim)
    with pytest.raises(files.NotFound):
        files.list_folder(host=host, username=USER, path="")
    with pytest.raises(files.NotFound):
        read(host, "thesis.tex")


def test_a_fifo_is_listed_and_never_opened(host, work, no_hang):
    os.mkfifo(work / "pipe")
    assert {e.name: e.kind for e in files.list_folder(host=host, username=USER, path="").entries}[
        "pipe"
    ] == "other"
    with pytest.raises(files.NotFound):
        read(host, "pipe")
    chunks = b"".join(files.zip_folder(host=host, username=USER, path=""))
    assert zipfile.ZipFile(io.BytesIO(chunks)).namelist() == ["results/metrics.csv"]


def test_another_username_is_not_a_way_in(host, work, victim):
    with pytest.raises(files.NotFound):
        files.list_folder(host=host, username="..", path="victim")


def test_an_upload_lands_in_the_folder_under_its_name_and_never_overwrites(host, work, settings):
    settings.FILES_UPLOAD_MAX_MB = 1
    saved = files.save_upload(host=host, username=USER, path="results", name="notes.txt", chunks=[b"a", b"b"])
    assert saved == "results/notes.txt"
    assert (work / "results" / "notes.txt").read_bytes() == b"ab"
    with pytest.raises(files.FileProblem, match="exists already"):
        files.save_upload(host=host, username=USER, path="results", name="notes.txt", chunks=[b"x"])
    assert (work / "results" / "notes.txt").read_bytes() == b"ab"
    assert [p.name for p in (work / "results").iterdir() if p.name.startswith(".upload-")] == []


@pytest.mark.parametrize("name", ["../escape.txt", "a/b", "x\x00y", "..", "", "a\\b", "n" * 256])
def test_an_upload_name_that_is_not_one_name_is_refused(host, work, victim, name):
    with pytest.raises(files.FileProblem):
        files.save_upload(host=host, username=USER, path="", name=name, chunks=[b"x"])
    assert sorted(p.name for p in work.iterdir()) == ["results"]
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.tex"]


def test_an_upload_over_the_limit_keeps_nothing(host, work, settings):
    settings.FILES_UPLOAD_MAX_MB = 1
    chunk = b"x" * (512 * 1024)
    with pytest.raises(files.FileProblem, match="larger than the upload limit of 1 MiB"):
        files.save_upload(host=host, username=USER, path="", name="big.bin", chunks=[chunk, chunk, b"x"])
    assert sorted(p.name for p in work.iterdir()) == ["results"]


def test_an_upload_through_a_planted_link_is_refused(host, work, victim):
    (work / "drop").symlink_to(victim)
    with pytest.raises(files.NotFound):
        files.save_upload(host=host, username=USER, path="drop", name="x.txt", chunks=[b"x"])
    (work / "thesis-link").symlink_to(victim / "thesis.tex")
    with pytest.raises(files.FileProblem, match="exists already"):
        files.save_upload(host=host, username=USER, path="", name="thesis-link", chunks=[b"overwritten"])
    assert (victim / "thesis.tex").read_text() == "the victim's thesis\n"
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.tex"]


def test_a_big_file_is_streamed_not_loaded(host, work):
    """A 64 MiB sparse file is read in chunks by whoever streams it: open_file returns a
    handle, never the content."""
    with open(work / "big.bin", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    handle, size, name = files.open_file(host=host, username=USER, path="big.bin")
    with handle:
        assert (size, name) == (64 * 1024 * 1024, "big.bin")
        assert len(handle.read(4096)) == 4096


def test_a_zip_holds_every_plain_file_under_the_folder_and_no_link(host, work, victim):
    (work / "results" / "deep").mkdir()
    (work / "results" / "deep" / "model.pt").write_bytes(b"weights")
    (work / "results" / "theirs").symlink_to(victim)
    archive = zipfile.ZipFile(
        io.BytesIO(b"".join(files.zip_folder(host=host, username=USER, path="results")))
    )
    assert sorted(archive.namelist()) == ["deep/model.pt", "metrics.csv"]
    assert archive.read("deep/model.pt") == b"weights"


def test_files_of_a_host_with_its_own_agent_are_not_read_here_unless_shared(host, settings):
    settings.FILES_SHARED_WORK_ROOT = False
    host.served_by_agent = False
    assert files.work_reachable(host)
    host.served_by_agent = True
    assert not files.work_reachable(host)
    settings.FILES_SHARED_WORK_ROOT = True
    assert files.work_reachable(host)
