"""JupyterLab through the portal (docs/jupyter.md): the one rule that says whether a
request may reach a reservation's JupyterLab, where the proxy finds it, and the token that
lets the proxy in. Both proxies (nginx's `auth_request` in production, the `lab_proxy`
command beside `make run`) ask the portal's `lab-auth` view, which asks `lab_target`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils.crypto import salted_hmac

from accounts.models import User
from bookings.models import Reservation
from containers.specs import LAB_PORT, lab_base_url

_TOKEN_SALT = "aivc.lab.jupyter-token"  # noqa: S105 (a salt, not a secret)


def lab_token(reservation_id: int) -> str:
    """The reservation's Jupyter token: keyed by SECRET_KEY, which the web server and every
    agent share, so the agent that writes the token file and the web server that hands it
    to the proxy agree without the token being stored anywhere else. Unguessable without
    the key, different for each reservation."""
    return salted_hmac(_TOKEN_SALT, str(int(reservation_id)), algorithm="sha256").hexdigest()


def lab_reachable(reservation: Reservation, *, now: datetime) -> bool:
    """Whether the reservation's JupyterLab may be reached now: a booking on a lab image
    whose container runs, inside its window, with an address its agent recorded."""
    return (
        reservation.kind == Reservation.Kind.BOOKING
        and reservation.status == Reservation.Status.RUNNING
        and reservation.start <= now < reservation.end
        and reservation.image is not None
        and reservation.image.lab_modes
        and bool(reservation.container_address)
    )


def lab_url(reservation: Reservation, *, now: datetime) -> str | None:
    """The link the reservation's pages show (Open JupyterLab), while the lab is reachable."""
    return lab_base_url(reservation.pk) if lab_reachable(reservation, now=now) else None


@dataclass(frozen=True)
class LabTarget:
    upstream: str  # host:port on the portal's bridge network
    token: str


def upstream_of(address: str) -> str:
    return f"[{address}]:{LAB_PORT}" if ":" in address else f"{address}:{LAB_PORT}"


def lab_target(*, user: User, reservation_id: int, now: datetime) -> LabTarget | None:
    """Where the proxy sends `user`'s request for the reservation's JupyterLab, or None:
    anyone but the owner, an account that must change its password first, a reservation
    that is not reachable now (not running, ended, not a lab image)."""
    if not user.is_authenticated or not user.is_active or user.must_change_password:
        return None
    reservation = (
        Reservation.objects.select_related("image").filter(pk=reservation_id, user_id=user.pk).first()
    )
    if reservation is None or not lab_reachable(reservation, now=now):
        return None
    return LabTarget(upstream=upstream_of(reservation.container_address), token=lab_token(reservation.pk))
