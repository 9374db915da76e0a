"""The portal's answers for JupyterLab: the question the proxies ask before every request
(`lab-auth`), what `/r/<pk>/lab/` answers when the portal itself gets it, and the button."""

import pytest
from django.urls import reverse

from bookings.models import Reservation
from containers.lab import lab_token
from containers.lab_views import AUTHORIZATION_HEADER, PROXY_HEADER, UPSTREAM_HEADER
from tests.factories import ImageFactory, ReservationFactory, UserFactory

Status = Reservation.Status
ASKED_BY_PROXY = {"headers": {PROXY_HEADER: "1"}}


@pytest.fixture
def running_lab(db, window):
    return ReservationFactory(
        image=ImageFactory(lab_modes=True), status=Status.RUNNING, container_address="10.88.0.7", **window
    )


def _auth(client, reservation, **extra):
    return client.get(reverse("lab-auth", args=[reservation.pk]), **{**ASKED_BY_PROXY, **extra})


def test_the_proxy_learns_where_the_owners_lab_is_and_the_token_to_add(client, running_lab):
    client.force_login(running_lab.user)
    response = _auth(client, running_lab)
    assert response.status_code == 204
    assert response[UPSTREAM_HEADER] == "10.88.0.7:8888"
    assert response[AUTHORIZATION_HEADER] == f"token {lab_token(running_lab.pk)}"
    assert "no-store" in response["Cache-Control"]


def test_a_browser_asking_the_question_itself_gets_404(client, running_lab):
    client.force_login(running_lab.user)
    response = client.get(reverse("lab-auth", args=[running_lab.pk]))
    assert response.status_code == 404
    assert lab_token(running_lab.pk) not in str(response.headers)


def test_the_proxy_is_told_an_anonymous_visitor_must_sign_in(client, running_lab):
    assert _auth(client, running_lab).status_code == 401


def test_the_proxy_is_refused_for_another_student(client, running_lab):
    client.force_login(UserFactory())
    response = _auth(client, running_lab)
    assert response.status_code == 403
    assert UPSTREAM_HEADER not in response


def test_the_proxy_is_refused_once_the_reservation_ended(client, running_lab):
    Reservation.objects.filter(pk=running_lab.pk).update(status=Status.ENDED)
    client.force_login(running_lab.user)
    assert _auth(client, running_lab).status_code == 403


def test_an_account_that_must_change_its_password_gets_401_not_a_redirect(client, running_lab):
    running_lab.user.must_change_password = True
    running_lab.user.save()
    client.force_login(running_lab.user)
    assert _auth(client, running_lab).status_code == 401


def test_the_question_takes_no_post(client, running_lab):
    client.force_login(running_lab.user)
    assert client.post(reverse("lab-auth", args=[running_lab.pk]), **ASKED_BY_PROXY).status_code == 405


# What the portal answers at /r/<pk>/lab/ (the proxy refused, or none is in front) ------


def test_anonymous_is_sent_to_the_login_page(client, running_lab):
    url = f"/r/{running_lab.pk}/lab/tree/notebook.ipynb"
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert "next=" in response["Location"]


def test_another_student_gets_404_on_the_lab_url(client, running_lab):
    client.force_login(UserFactory())
    assert client.get(f"/r/{running_lab.pk}/lab/").status_code == 404
    assert client.get(f"/r/{running_lab.pk}/lab/api/kernels").status_code == 404


def test_the_lab_url_is_404_after_the_end(client, running_lab):
    Reservation.objects.filter(pk=running_lab.pk).update(status=Status.ENDED)
    client.force_login(running_lab.user)
    assert client.get(f"/r/{running_lab.pk}/lab/").status_code == 404


def test_a_missing_reservation_is_404(client, running_lab):
    client.force_login(running_lab.user)
    assert client.get(f"/r/{running_lab.pk + 1000}/lab/").status_code == 404


def test_the_owner_is_sent_to_the_lab_proxy_of_make_run(client, running_lab, settings):
    settings.LAB_PROXY_PORT = 8001
    client.force_login(running_lab.user)
    response = client.get(f"/r/{running_lab.pk}/lab/tree?x=1", HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 302
    assert response["Location"] == f"http://127.0.0.1:8001/r/{running_lab.pk}/lab/tree?x=1"


def test_without_a_proxy_the_owner_is_told_what_is_missing(client, running_lab, settings):
    settings.LAB_PROXY_PORT = 0
    client.force_login(running_lab.user)
    response = client.get(f"/r/{running_lab.pk}/lab/")
    assert response.status_code == 503
    assert b"no JupyterLab proxy" in response.content
    assert lab_token(running_lab.pk).encode() not in response.content


# The button ----------------------------------------------------------------------------


def test_the_reservation_page_offers_jupyterlab_while_it_runs(client, running_lab):
    client.force_login(running_lab.user)
    page = client.get(reverse("reservation-detail", args=[running_lab.pk])).content.decode()
    assert f'href="/r/{running_lab.pk}/lab/"' in page
    assert "Open JupyterLab" in page
    assert lab_token(running_lab.pk) not in page
    status = client.get(reverse("reservation-status", args=[running_lab.pk])).content.decode()
    assert f'href="/r/{running_lab.pk}/lab/"' in status


@pytest.mark.parametrize("status", [Status.STARTING, Status.ENDED, Status.SCHEDULED])
def test_no_button_unless_the_container_runs(client, running_lab, status):
    Reservation.objects.filter(pk=running_lab.pk).update(status=status)
    client.force_login(running_lab.user)
    page = client.get(reverse("reservation-detail", args=[running_lab.pk])).content.decode()
    assert "Open JupyterLab" not in page


def test_no_button_on_an_image_without_lab_modes(client, running_lab):
    running_lab.image.lab_modes = False
    running_lab.image.save()
    client.force_login(running_lab.user)
    page = client.get(reverse("reservation-detail", args=[running_lab.pk])).content.decode()
    assert "Open JupyterLab" not in page
