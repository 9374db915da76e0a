"""The container's own size (containers/specs.py): the CPU count it is shown, the thread
variables, and the least-loaded choice of host CPUs."""

from decimal import Decimal

import pytest

from containers.specs import (
    THREAD_VARIABLES,
    choose_cpus,
    container_spec,
    cpu_count,
    format_cpuset,
    parse_cpuset,
    thread_environment,
)


@pytest.mark.parametrize(("cpus", "count"), [("1", 1), ("1.5", 2), ("2", 2), ("0.5", 1), ("7.01", 8)])
def test_a_booking_sees_its_cpus_rounded_up(cpus, count):
    assert cpu_count(Decimal(cpus)) == count


def test_every_thread_variable_says_the_count():
    assert thread_environment(3) == {name: "3" for name in THREAD_VARIABLES}
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"} <= set(
        THREAD_VARIABLES
    )


@pytest.mark.parametrize(("text", "cpus"), [("", []), ("3", [3]), ("0-2,5", [0, 1, 2, 5]), ("1,0", [0, 1])])
def test_cpusets_read_and_write_the_kernels_list_format(text, cpus):
    assert parse_cpuset(text) == cpus
    assert parse_cpuset(format_cpuset(cpus)) == cpus


def test_format_joins_runs():
    assert format_cpuset([5, 0, 1, 2, 7]) == "0-2,5,7"


def test_the_least_loaded_cpus_are_chosen_ties_by_number():
    assert choose_cpus(count=2, cpus=range(4), load={0: 1.0, 1: 0.5}) == [2, 3]
    assert choose_cpus(count=3, cpus=range(4), load={0: 1.0, 1: 0.5}) == [1, 2, 3]
    assert choose_cpus(count=1, cpus=range(4), load={}) == [0]


def test_no_cpuset_when_the_host_has_too_few():
    assert choose_cpus(count=5, cpus=range(4), load={}) is None
    assert choose_cpus(count=1, cpus=[], load={}) is None


def test_the_spec_carries_the_count_and_the_variables(db, default_profile):
    from tests.factories import HostFactory, ReservationFactory

    reservation = ReservationFactory(host=HostFactory(cpus=16, ram_gb=64), cpus=Decimal("2.5"))
    spec = container_spec(reservation=reservation, image="img:1", mounts=[])
    assert spec.cpu_count == 3 and spec.cpuset == ""
    assert spec.nano_cpus == 2_500_000_000  # the quota stays the real limit
    assert spec.environment["OMP_NUM_THREADS"] == spec.environment["MKL_NUM_THREADS"] == "3"
