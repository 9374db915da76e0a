"""The portal's side of JupyterLab through the portal (docs/jupyter.md).

`lab_auth` is the question both proxies ask before every request and WebSocket under
`/r/<pk>/lab/`: 204 with where the container is and the token header to add, 401 for
someone who must sign in first, 403 for everything else. The proxies never show these
answers: on anything but 204 they hand the request to `lab_entry`, which answers as any
portal page does (the login page, the password change, 404)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.request import split_domain_port
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from containers.lab import lab_target

# Only a proxy sends it; a browser's navigation to the question's URL never carries it.
PROXY_HEADER = "X-Aivc-Lab-Proxy"
UPSTREAM_HEADER = "X-Aivc-Lab-Upstream"
AUTHORIZATION_HEADER = "X-Aivc-Lab-Authorization"


@never_cache
@require_safe
def lab_auth(request: HttpRequest, pk: int) -> HttpResponse:
    if request.headers.get(PROXY_HEADER) != "1":
        raise Http404
    if not request.user.is_authenticated or request.user.must_change_password:
        return HttpResponse(status=401)
    target = lab_target(user=request.user, reservation_id=pk, now=timezone.now())
    if target is None:
        return HttpResponse(status=403)
    response = HttpResponse(status=204)
    response[UPSTREAM_HEADER] = target.upstream
    response[AUTHORIZATION_HEADER] = f"token {target.token}"
    return response


@never_cache
@login_required
def lab_entry(request: HttpRequest, pk: int, rest: str = "") -> HttpResponse:
    """`/r/<pk>/lab/...` when the portal itself gets it: the proxy refused (or there is
    none in front). Anyone but the owner of a reachable lab gets 404. The owner is sent to
    the lab proxy of `make run` when one is configured, otherwise told what is missing."""
    if lab_target(user=request.user, reservation_id=pk, now=timezone.now()) is None:
        raise Http404
    if settings.LAB_PROXY_PORT:
        domain, _ = split_domain_port(request.get_host())
        domain = f"[{domain}]" if ":" in domain else domain
        return HttpResponseRedirect(
            f"{request.scheme}://{domain}:{settings.LAB_PROXY_PORT}{request.get_full_path()}"
        )
    return render(request, "containers/lab_no_proxy.html", {"pk": pk}, status=503)
