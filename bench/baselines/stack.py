"""The JSON library and event loop a baseline uses: the server's own, as the harness detected.

``--json`` is ``json`` (stdlib) or ``orjson``; ``--loop`` is ``asyncio`` or
``uvloop``. The harness reads them from the server's imports
(``harness.machine.server_stack``) so that a baseline never pays for a slower
(or a faster) library than the server it is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

Loads = Callable[[bytes], Any]
Dumps = Callable[[Any], bytes]


def json_functions(name: str) -> tuple[Loads, Dumps]:
    if name == "orjson":
        import orjson

        return orjson.loads, orjson.dumps

    def dumps(value: Any) -> bytes:
        return json.dumps(value).encode()

    return json.loads, dumps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json", choices=["json", "orjson"], default="json")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")


def json_response(dumps: Dumps, value: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type="application/json")


def run(app: web.Application, port: int, loop_name: str) -> None:
    loop = None
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)
