"""The inspector's files over plain HTTP (no browser): routes, types, headers, refusals."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import REPO, ServerProcess

UI_DIR = REPO / "server" / "src" / "fastpaca_server" / "ui"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as plain:
        yield plain


def assets() -> list[Path]:
    return sorted(path for path in UI_DIR.iterdir() if path.suffix in TYPES)


def csp_directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    pairs = (part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    return {name: value for name, value in pairs}


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, (response.request.url, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == "not_found", body


def test_ui_redirects_to_the_page(client: httpx.Client) -> None:
    response = client.get("/ui")
    assert response.status_code in (301, 308)
    assert response.headers["Location"] == "/ui/"
    followed = client.get("/ui", follow_redirects=True)
    assert followed.status_code == 200 and str(followed.url).endswith("/ui/")


def test_the_page_and_each_file_have_their_type_and_headers(client: httpx.Client) -> None:
    index = client.get("/ui/")
    assert index.status_code == 200
    assert index.headers["Content-Type"] == TYPES[".html"]
    assert index.content == (UI_DIR / "index.html").read_bytes()
    files = assets()
    assert {path.name for path in files} >= {"index.html", "app.js", "app.css"}
    for path in files:
        response = client.get(f"/ui/{path.name}")
        assert response.status_code == 200, path.name
        assert response.headers["Content-Type"] == TYPES[path.suffix], path.name
        assert response.content == path.read_bytes(), path.name
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        directives = csp_directives(response)
        assert directives["default-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert "unsafe" not in response.headers["Content-Security-Policy"]
        # Revalidation: the same ETag answers 304 without a body.
        again = client.get(f"/ui/{path.name}", headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and again.content == b""
    head = client.head("/ui/app.js")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/app.js.map",
        "/ui/__init__.py",
        "/ui/.app.js",
        "/ui/..%2Fapi%2Fui.py",
        "/ui/..%2F..%2F..%2F..%2Fpyproject.toml",
        "/ui/%2e%2e%2fapp.py",
        "/ui/..%5Capp.py",
        "/ui/app.js%00.css",
        "/ui/index.html%2F",
        "/ui/ui.py",
    ],
)
def test_only_the_files_of_the_directory_are_served(client: httpx.Client, path: str) -> None:
    assert_not_found(client.get(httpx.URL(path)))


def test_dot_segments_reach_nothing_outside(server: ServerProcess) -> None:
    """A raw ``..`` (not normalised by a client) never leaves the directory."""
    for path in ("/ui/../api/ui.py", "/ui/../../../pyproject.toml", "/ui/./../ui.py"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 404, (path, body)
        assert b'"not_found"' in body
        assert b"import" not in body and b"[project]" not in body


def test_the_files_carry_no_inline_code_no_other_host_and_no_html_sinks() -> None:
    """What the CSP would block anyway is not written in the first place; text from the
    API never meets an HTML parser."""
    index = (UI_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", index, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", index)  # no inline event handlers
    assert " style=" not in index and "<style" not in index
    for path in assets():
        source = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", source), path.name
        if path.suffix == ".js":
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
                assert sink not in source, (path.name, sink)
            assert not re.search(r"\beval\(|new Function\(", source), path.name


def test_the_wheel_carries_the_files() -> None:
    """``[tool.setuptools.package-data]`` names every kind of file the page has."""
    pyproject = (REPO / "server" / "pyproject.toml").read_text()
    line = next(row for row in pyproject.splitlines() if row.startswith("fastpaca_server = ["))
    for suffix in {path.suffix for path in assets()}:
        assert f'"ui/*{suffix}"' in line, suffix
