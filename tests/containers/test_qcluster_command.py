"""The agent's `qcluster` command around django-q's Cluster: a stop request that lands while
the cluster is starting is not lost."""

import os
import signal

import pytest

from containers.management.commands import qcluster


class StartingCluster:
    """Behaves as django-q's Cluster does around a signal: its handler asks `stop`, and
    `stop` does nothing while the sentinel process is not alive yet. Here the signal lands
    exactly then, as systemd's stop may."""

    def __init__(self) -> None:
        self.sentinel_alive = False
        self.stopped = False
        signal.signal(signal.SIGTERM, self.sig_handler)

    def start(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        self.sentinel_alive = True

    def stop(self) -> bool:
        if not self.sentinel_alive:
            return False
        self.stopped = True
        self.sentinel_alive = False
        return True

    def sig_handler(self, signum: int, frame: object) -> None:
        self.stop()


@pytest.fixture
def own_sigterm_handler():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_while_the_cluster_starts_stops_the_agent(monkeypatch, own_sigterm_handler):
    clusters: list[StartingCluster] = []
    served: list[str] = []

    def cluster() -> StartingCluster:
        clusters.append(StartingCluster())
        return clusters[-1]

    monkeypatch.setattr(qcluster, "Cluster", cluster)
    monkeypatch.setattr(qcluster, "keep_beating", lambda **kwargs: served.append("beating") or True)

    qcluster.Command()._serve(host=None, holder="machine:1:token", run_once=False)

    assert clusters[0].stopped
    assert served == []  # it never went on serving as if nothing had been asked
