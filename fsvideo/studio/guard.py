"""The studio's checks of requests before the endpoints: the Host (DNS rebinding), cross-site requests
and malformed bodies, each refused as a one-line ``{"error": ...}`` like every other error.

Why an Origin check besides the Host check (DNS rebinding) and the session ids: a page of another
site open in the user's browser can still send "simple" requests to 127.0.0.1 (a form POST, or a
``fetch`` in ``no-cors`` mode: text/plain or multipart, no preflight).  It cannot read the answers,
so it never learns a session id, but ``POST /api/session`` needs none, and 33 of them evicted the
user's own session (:data:`~fsvideo.studio.session.MAX_SESSIONS`), cancelling its export.
Browsers send ``Origin`` with every POST that is not a plain navigation, and ``Sec-Fetch-Site``
with every request; a POST whose origin is not the studio's own address is refused (403) before
any endpoint runs.  Clients that are not browsers (curl, scripts) send neither and are not affected.

FastAPI answers a body that does not match an endpoint's model with its own 422 ``{"detail": [...]}``
(a list of pydantic errors, not the ``{"error": ...}`` the page shows), and fails with a 500 when
the bad value is NaN or Infinity (Python's JSON reader takes them; the answer cannot hold them).

Request bodies had no size limit: FastAPI reads a JSON body whole into memory before the endpoint
sees it, so one request of any length (a 2 GB ``path``) held that much memory.  The studio's JSON
requests are a few hundred bytes; bodies over :data:`MAX_JSON_BYTES` are refused (413) unread.
The two upload endpoints stream their bodies to disk under their own limits and are left to them.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_JSON_BYTES = 1 << 20                                    # 1 MiB: a JSON request of the page is < 10 kB
STREAMED = re.compile(r"/api/s/[^/]+/(upload|direction)")   # bodies written to disk under their own limit


def _json(status: int, message: str):
    body = json.dumps({"error": message}).encode()
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}, body


async def _refuse(send, status: int, message: str) -> None:
    start, body = _json(status, message)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class LocalHost:
    """ASGI middleware against DNS rebinding: answer only requests addressed to this machine by name
    (a 400 ``{"error"}``, where Starlette's TrustedHostMiddleware answered plain text)."""

    ALLOWED = ("127.0.0.1", "localhost", "[::1]")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
            host = raw[:raw.find("]") + 1] if raw.startswith("[") else raw.split(":")[0]
            if host not in self.ALLOWED:
                await _refuse(send, 400, f"this studio answers only requests to 127.0.0.1 or localhost, not "
                                         f"{raw[:100]!r}; open it at the address fsvideo studio printed")
                return
        await self.app(scope, receive, send)


class SameOrigin:
    """ASGI middleware: refuse a state-changing request sent by a page of another origin (403)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            why = cross_site(dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]))
            if why:
                await _refuse(send, 403, f"cross-site request refused ({why}); "
                                         "use the studio's own page at the address fsvideo studio printed")
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over :data:`MAX_JSON_BYTES` is refused (413) before any
    endpoint reads it, by its Content-Length or, when it has none (chunked), as it arrives.  A body
    within the limit is read here and handed on whole (at most 1 MiB held)."""

    def __init__(self, app, limit: int = MAX_JSON_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or STREAMED.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, f"the request body is {int(declared) / 2**20:.1f} MiB,")
            return
        parts, n, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":       # the client went away: nobody to answer
                return
            parts.append(message.get("body", b""))
            n += len(parts[-1])
            if n > self.limit:
                await self._refuse(send, "the request body is")
                return
            more = message.get("more_body", False)
        whole = {"type": "http.request", "body": b"".join(parts), "more_body": False}

        async def replay():
            nonlocal whole
            if whole is None:
                return await receive()                   # after the body: wait for the disconnect
            message, whole = whole, None
            return message
        await self.app(scope, replay, send)

    async def _refuse(self, send, what: str) -> None:
        await _refuse(send, 413, f"{what} over the limit of {self.limit / 2**20:g} MiB for the studio's JSON "
                                 "requests; videos and directions go through the upload endpoints "
                                 "(/api/s/SID/upload, /api/s/SID/direction)")


def cross_site(headers: dict[str, str]) -> str | None:
    """Why a request with these (lower-case) headers comes from another site, or None."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin {origin} is not http://{host}"
    return None


def validation_message(errors) -> str:
    """A one-line message for FastAPI's request validation errors (the first one; pydantic's list)."""
    if not errors:
        return "malformed request"
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
    kind, msg = e.get("type", ""), e.get("msg", "invalid")
    if kind == "json_invalid":
        return "the request body is not valid JSON; send a JSON object with Content-Type: application/json"
    if not where or kind == "model_attributes_type":
        return ("the request body must be a JSON object; send it with Content-Type: application/json "
                "(see the endpoint list in fsvideo/studio/app.py)")
    if kind == "missing":
        return f"{where} is missing; add it to the request's JSON object"
    value = repr(e.get("input"))
    value = value if len(value) <= 60 else value[:57] + "..."
    return f"{where} {value} is not valid: {msg[0].lower() + msg[1:]}"
