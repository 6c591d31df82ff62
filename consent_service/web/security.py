"""Security headers on every response, and no caching of pages opened by a signed link."""

from __future__ import annotations

from flask import Flask, request
from flask.wrappers import Response

# No inline script or style anywhere: every page works with the stylesheet and without script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)


def add_security_headers(response: Response) -> Response:
    """CSP, no referrer (a signed link in the address must not leak to another site), no MIME
    sniffing, no framing; `Cache-Control: no-store` on every page whose URL carries a signed link,
    including its error pages."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    if request.view_args and "token" in request.view_args:
        headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
