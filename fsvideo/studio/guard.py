"""The studio's checks of requests before the endpoints: malformed bodies as one-line errors.

FastAPI answers a body that does not match an endpoint's model with its own 422 ``{"detail": [...]}``
(a list of pydantic errors, not the ``{"error": ...}`` the page shows), and fails with a 500 when
the bad value is NaN or Infinity (Python's JSON reader takes them; the answer cannot hold them).
"""
from __future__ import annotations


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
