"""The inspector page: ``GET /ui/`` and its static files (``fastpaca_server/ui``).

The files are plain HTML, CSS and ES modules with no data in them, so they
are served without the API key (a browser navigation cannot send a Bearer
header); every data request the page makes goes to ``/v1`` with the key.
Only the files of that one directory with a known type are served, read at
each request (they are small), with ``Cache-Control: no-cache`` and an ETag,
and a Content-Security-Policy that allows nothing but this origin: no inline
script or style, no other host.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from .errors import error_response

routes = web.RouteTableDef()

UI_FILES: Traversable = resources.files("fastpaca_server") / "ui"
"""The directory of the page's files (inside the installed package)."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The types of the files served; a file of any other type is not served."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "connect-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\.[a-z]+")


def _asset(request: web.Request, name: str) -> web.Response:
    """The file ``name`` of the page's directory, or 404 (any other name, or a path)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    entry = UI_FILES / name
    if not _NAME.fullmatch(name) or suffix not in CONTENT_TYPES or not entry.is_file():
        return error_response(404, "not_found", f"The inspector has no file {name!r}.")
    body = entry.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Content-Type": CONTENT_TYPES[suffix],
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


@routes.get("/ui")
async def ui_redirect(request: web.Request) -> web.Response:
    """``/ui`` → ``/ui/`` (308), so the page's relative links resolve under ``/ui/``."""
    return web.Response(status=308, headers={"Location": "/ui/", "Cache-Control": "no-cache"})


@routes.get("/ui/")
async def ui_index(request: web.Request) -> web.Response:
    """The inspector page; the URL's ``#/…`` part says which view it shows."""
    return _asset(request, "index.html")


@routes.get("/ui/{name}")
async def ui_file(request: web.Request) -> web.Response:
    """One of the page's files (scripts, styles, icon)."""
    return _asset(request, request.match_info["name"])
