"""A Docker runtime that stalls after the container starts, so a test can kill the tick
between "container started" and "reservation marked running"."""

import time

from containers.runtime import DockerRuntime
from containers.specs import ContainerSpec, ContainerState


class SlowAfterStartRuntime(DockerRuntime):
    def run(self, spec: ContainerSpec) -> ContainerState:
        state = super().run(spec)
        time.sleep(60)
        return state
