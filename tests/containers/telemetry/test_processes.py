from containers.telemetry.processes import container_id_for_pid, container_id_from_cgroup, same_container
from tests.containers.telemetry.helpers import CONTAINER_A, CONTAINER_B, write_cgroup

CGROUP_V1_DOCKER = f"""12:devices:/docker/{CONTAINER_A}
11:memory:/docker/{CONTAINER_A}
10:cpu,cpuacct:/docker/{CONTAINER_A}
1:name=systemd:/docker/{CONTAINER_A}
0::/system.slice/containerd.service
"""
CGROUP_V1_HOST = """12:devices:/user.slice
11:memory:/user.slice/user-1000.slice/session-4.scope
1:name=systemd:/user.slice/user-1000.slice/session-4.scope
"""
CGROUP_V2_SYSTEMD = f"0::/system.slice/docker-{CONTAINER_B}.scope\n"
CGROUP_V2_HOST = "0::/user.slice/user-1000.slice/session-3.scope\n"


def test_it_reads_the_container_from_a_cgroup_v1_file():
    assert container_id_from_cgroup(CGROUP_V1_DOCKER) == CONTAINER_A


def test_it_reads_the_container_from_a_cgroup_v2_file():
    assert container_id_from_cgroup(CGROUP_V2_SYSTEMD) == CONTAINER_B


def test_it_reads_the_container_under_the_cgroupfs_driver_on_v2():
    assert container_id_from_cgroup(f"0::/docker/{CONTAINER_A}\n") == CONTAINER_A


def test_it_reads_containerd_and_podman_containers():
    kubernetes = f"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CONTAINER_A}.scope\n"
    podman = f"0::/machine.slice/libpod-{CONTAINER_B}.scope/container\n"

    assert container_id_from_cgroup(kubernetes) == CONTAINER_A
    assert container_id_from_cgroup(podman) == CONTAINER_B


def test_a_host_process_has_no_container():
    assert container_id_from_cgroup(CGROUP_V1_HOST) is None
    assert container_id_from_cgroup(CGROUP_V2_HOST) is None
    assert container_id_from_cgroup("") is None


def test_a_hex_run_longer_than_an_id_is_not_an_id():
    assert container_id_from_cgroup(f"0::/docker/{CONTAINER_A}ff\n") is None


def test_the_reader_finds_a_pid_under_the_proc_root(tmp_path):
    write_cgroup(tmp_path, 4242, CGROUP_V1_DOCKER)
    write_cgroup(tmp_path, 4243, CGROUP_V2_HOST)

    assert container_id_for_pid(4242, proc_root=tmp_path) == CONTAINER_A
    assert container_id_for_pid(4243, proc_root=tmp_path) is None


def test_a_process_that_has_exited_has_no_container(tmp_path):
    assert container_id_for_pid(99999, proc_root=tmp_path) is None


def test_short_and_full_ids_name_the_same_container():
    assert same_container(CONTAINER_A, CONTAINER_A[:12])
    assert same_container(CONTAINER_A[:12], CONTAINER_A)
    assert not same_container(CONTAINER_A, CONTAINER_B[:12])
    assert not same_container(None, CONTAINER_A)
    assert not same_container(CONTAINER_A, "")
