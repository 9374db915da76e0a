"""Helpers shared by the container lifecycle tests."""

from containers.fake_runtime import FakeRuntime
from containers.models import ContainerEvent, SpaceAudit
from containers.specs import ContainerSpec


def SpaceAuditFactory(**fields) -> SpaceAudit:
    return SpaceAudit.objects.create(**fields)


def engine(reservation) -> "FakeRuntime":
    return FakeRuntime.engine_for(reservation.host)


def only_spec(reservation) -> ContainerSpec:
    specs = [spec for _, spec in engine(reservation).containers.values()]
    assert len(specs) == 1
    return specs[0]


def events(reservation, **filters):
    return list(ContainerEvent.objects.filter(host=reservation.host, **filters).order_by("created_at", "pk"))
