"""The HTTP side: one function per call shape, errors turned into ApiError with the exit
code a script can rely on (see EXIT_CODES)."""

import os

import httpx

from aivc_cli import config

USER_AGENT = "aivc-cli/1.0"

# Documented in docs/api.md; never renumber.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REFUSED = 4
EXIT_NOT_FOUND = 5
EXIT_FORBIDDEN = 6
EXIT_THROTTLED = 7
EXIT_UNREACHABLE = 8

_EXIT_BY_STATUS = {
    400: EXIT_REFUSED,
    401: EXIT_AUTH,
    403: EXIT_FORBIDDEN,
    404: EXIT_NOT_FOUND,
    429: EXIT_THROTTLED,
}


class ApiError(Exception):
    def __init__(self, message: str, *, exit_code: int, body: dict | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body or {"detail": message, "code": "client_error", "errors": {}}
        self.status = status


def portal_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get("AIVC_URL") or config.load().get("url")
    if not url:
        raise ApiError("No portal URL: run `aivc login --url URL` or set AIVC_URL.", exit_code=EXIT_AUTH)
    return url.rstrip("/")


def token() -> str:
    value = os.environ.get("AIVC_TOKEN") or config.load().get("token")
    if not value:
        raise ApiError("Not logged in: run `aivc login` (or set AIVC_TOKEN).", exit_code=EXIT_AUTH)
    return value


def _error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        body = {"detail": f"HTTP {response.status_code}", "code": "http_error", "errors": {}}
    exit_code = _EXIT_BY_STATUS.get(
        response.status_code, EXIT_UNREACHABLE if response.status_code >= 500 else EXIT_ERROR
    )
    return ApiError(str(body["detail"]), exit_code=exit_code, body=body, status=response.status_code)


def request(
    method: str,
    path: str,
    *,
    url: str | None = None,
    json: dict | None = None,
    params: dict | None = None,
    auth: bool = True,
    bearer: str | None = None,
) -> httpx.Response:
    """One API call (with the saved token, or `bearer`); any answer but 2xx raises ApiError."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {bearer or token()}"
    base = portal_url(url)
    try:
        response = httpx.request(
            method, f"{base}/api/v1/{path.lstrip('/')}", headers=headers, json=json, params=params, timeout=30
        )
    except httpx.HTTPError as error:
        raise ApiError(f"Cannot reach the portal at {base}: {error}", exit_code=EXIT_UNREACHABLE) from None
    if response.status_code >= 400:
        raise _error_from(response)
    return response


def get(path: str, **kwargs) -> object:
    return request("GET", path, **kwargs).json()


def post(path: str, **kwargs) -> object:
    response = request("POST", path, **kwargs)
    return response.json() if response.content else {}


def all_pages(path: str, params: dict | None = None) -> list[dict]:
    """Every row of a paginated list (a bare list is returned as it is)."""
    params = dict(params or {})
    params.setdefault("page_size", 200)
    rows: list[dict] = []
    page = 1
    while True:
        body = get(path, params={**params, "page": page})
        if isinstance(body, list):
            return body
        rows.extend(body.get("results", []))
        if not body.get("next"):
            return rows
        page += 1
