"""The pids part of the build fence: the parent cgroup every build step runs in, found (or
made, by a root agent) in cgroup v1 and v2 layouts; a fake /sys/fs/cgroup in tmp_path."""

import pytest

from containers.build_fence import FenceMissing, cgroup_parent_argument, ensure_pids_fence, pids_max_file


def test_the_engine_gets_a_cgroupfs_path_from_the_root_or_a_slice_as_it_is():
    assert cgroup_parent_argument("aivc-build") == "/aivc-build"
    assert cgroup_parent_argument("/aivc-build/") == "/aivc-build"
    assert cgroup_parent_argument("aivc-build.slice") == "aivc-build.slice"


def test_it_finds_the_pids_file_in_v1_and_v2_and_under_systemds_slice_nesting(tmp_path):
    assert pids_max_file("aivc-build", root=tmp_path) == tmp_path / "pids/aivc-build/pids.max"
    assert (
        pids_max_file("aivc-build.slice", root=tmp_path)
        == tmp_path / "pids/aivc.slice/aivc-build.slice/pids.max"
    )
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert pids_max_file("aivc-build", root=tmp_path) == tmp_path / "aivc-build/pids.max"


def test_a_root_agent_makes_the_v1_parent_with_the_limit(tmp_path):
    (tmp_path / "pids").mkdir()
    assert ensure_pids_fence(parent="aivc-build", limit=256, root=tmp_path) == 256
    assert (tmp_path / "pids/aivc-build/pids.max").read_text() == "256"


def test_on_v2_it_turns_the_pids_controller_on_above_the_parent(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    ensure_pids_fence(parent="aivc-build", limit=128, root=tmp_path)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"
    assert (tmp_path / "aivc-build/pids.max").read_text() == "128"


def test_an_installed_lower_limit_is_kept_and_a_higher_or_missing_one_lowered(tmp_path):
    parent = tmp_path / "pids/aivc-build"
    parent.mkdir(parents=True)
    (parent / "pids.max").write_text("64\n")
    assert ensure_pids_fence(parent="aivc-build", limit=256, root=tmp_path) == 64
    (parent / "pids.max").write_text("max\n")
    assert ensure_pids_fence(parent="aivc-build", limit=256, root=tmp_path) == 256


def test_without_the_install_or_the_right_to_make_it_the_fence_is_missing(tmp_path):
    with pytest.raises(FenceMissing, match="no pids limit of at most 256"):
        ensure_pids_fence(parent="aivc-build.slice", limit=256, root=tmp_path)
    (tmp_path / "pids").write_text("")  # not a folder: nobody can make the parent there
    with pytest.raises(FenceMissing, match=r"deploy/build-fence/setup\.sh"):
        ensure_pids_fence(parent="aivc-build", limit=256, root=tmp_path)
