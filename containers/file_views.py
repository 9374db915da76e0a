"""The Files pages: a user's own Work folder from the browser, without a booking (list,
download, upload). The rules (what is reachable, how) are in `containers/files.py`;
these views only check the host is open to the user and turn problems into messages."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST, require_safe

from bookings.selectors import hosts_open_to
from containers import files
from containers.models import Host

# Multipart framing around the file: headers, boundaries, the form's other fields.
UPLOAD_OVERHEAD_BYTES = 64 * 1024


def _host(request: HttpRequest, host_id: int) -> Host:
    """A host open to the signed-in user, or 404 (no hint that it exists)."""
    host = hosts_open_to(user=request.user).filter(pk=host_id).first()
    if host is None:
        raise Http404
    return host


def browse_url(host: Host, path: str = "") -> str:
    url = reverse("files-browse", args=[host.pk])
    return f"{url}?{urlencode({'path': path})}" if path else url


def _crumbs(path: str) -> list[tuple[str, str]]:
    names = [name for name in path.split("/") if name]
    return [(name, "/".join(names[: index + 1])) for index, name in enumerate(names)]


@login_required
@require_safe
def files_home(request: HttpRequest) -> HttpResponse:
    hosts = list(hosts_open_to(user=request.user))
    if len(hosts) == 1:
        return redirect(browse_url(hosts[0]))
    return render(request, "containers/files_hosts.html", {"hosts": hosts})


@login_required
@require_safe
def files_browse(request: HttpRequest, host_id: int) -> HttpResponse:
    host = _host(request, host_id)
    context = {
        "host": host,
        "reachable": files.work_reachable(host),
        "limit_mb": files.upload_limit_bytes() >> 20,
    }
    if context["reachable"]:
        try:
            listing = files.list_folder(
                host=host, username=request.user.username, path=request.GET.get("path", "")
            )
        except files.NotFound:
            if request.GET.get("path"):
                raise Http404 from None
            listing = files.Listing(path="", entries=[], truncated=False)  # not made yet
        except files.FileProblem as problem:
            listing = None
            context["error"] = str(problem)
        context.update(listing=listing, crumbs=_crumbs(listing.path) if listing else [])
    return render(request, "containers/files.html", context)


@login_required
@require_safe
def files_download(request: HttpRequest, host_id: int) -> FileResponse:
    host = _host(request, host_id)
    if not files.work_reachable(host):
        raise Http404
    try:
        handle, size, name = files.open_file(
            host=host, username=request.user.username, path=request.GET.get("path", "")
        )
    except files.FileProblem:  # not found, or not readable by the portal: no hint either way
        raise Http404 from None
    # Always an attachment of no particular type: a student's HTML never renders here.
    response = FileResponse(
        handle, as_attachment=True, filename=name, content_type="application/octet-stream"
    )
    response["Content-Length"] = str(size)
    return response


def zip_response(*, host: Host, username: str, path: str, filename: str) -> StreamingHttpResponse:
    """A folder of the user's Work folder as a zip streamed while it is made; 404 when
    the folder is not there (or not reachable from here)."""
    if not files.work_reachable(host):
        raise Http404
    try:
        stream = files.zip_folder(host=host, username=username, path=path)
    except files.FileProblem:
        raise Http404 from None
    response = StreamingHttpResponse(stream, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_safe
def files_zip(request: HttpRequest, host_id: int) -> StreamingHttpResponse:
    host = _host(request, host_id)
    path = request.GET.get("path", "")
    name = (path.rstrip("/").rsplit("/", 1)[-1] or "Work").encode("ascii", "replace").decode()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return zip_response(host=host, username=request.user.username, path=path, filename=f"{safe}.zip")


class _LimitedUpload(FileUploadHandler):
    """Stops reading an upload as soon as it passes the limit (nothing more is read from
    the client, nothing more is written to a temporary file)."""

    def __init__(self, request: HttpRequest, *, limit: int) -> None:
        super().__init__(request)
        self.limit, self.received = limit, 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.request.upload_over_limit = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def _over_limit(request: HttpRequest, *, host: Host) -> HttpResponse:
    message = _("The file is larger than the upload limit of %(limit)d MiB.") % {
        "limit": files.upload_limit_bytes() >> 20
    }
    context = {
        "host": host,
        "reachable": True,
        "error": message,
        "limit_mb": files.upload_limit_bytes() >> 20,
    }
    return render(request, "containers/files.html", context, status=413)


@csrf_exempt  # checked by _upload, after the size limit is in place (the check reads the body)
@require_POST
def files_upload(request: HttpRequest, host_id: int) -> HttpResponse:
    limit = files.upload_limit_bytes()
    request.upload_handlers.insert(0, _LimitedUpload(request, limit=limit))
    return _upload(request, host_id, limit=limit)


files_upload.limits_its_upload = True  # aivc_portal.middleware.RefuseNulCharacters


@login_required
@csrf_protect
def _upload(request: HttpRequest, host_id: int, *, limit: int) -> HttpResponse:
    host = _host(request, host_id)
    if not files.work_reachable(host):
        raise Http404
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD_BYTES:
        return _over_limit(request, host=host)  # refused before the body is read
    path = request.POST.get("path", "")
    if "\x00" in path:  # as RefuseNulCharacters answers for every other form
        return HttpResponseBadRequest(_("The request contains a NUL character, which no field accepts."))
    if getattr(request, "upload_over_limit", False):
        return _over_limit(request, host=host)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        messages.error(request, _("Choose a file to upload."))
        return redirect(browse_url(host, path))
    try:
        saved = files.save_upload(
            host=host,
            username=request.user.username,
            path=path,
            name=request.POST.get("name") or uploaded.name,
            chunks=uploaded.chunks(),
        )
    except files.NotFound:
        raise Http404 from None
    except files.FileProblem as problem:
        messages.error(request, str(problem))
    else:
        messages.success(request, _("Uploaded to Work/%(path)s.") % {"path": saved})
    return redirect(browse_url(host, path))
