"""Baseline 1: a bare aiohttp handler that parses and returns the same JSON.

The floor under every request: HTTP, JSON (the server's library) and the
event loop (the server's loop), and nothing else: no validation, no token
counting, no Raft, no fsync. It answers the same paths as the server:

* ``PUT /v1/contexts/{id}``: parses the body and echoes it with an id.
* ``POST /v1/contexts/{id}/messages``: parses the body and answers an
  append-shaped object (``seq``, ``version``, ``messages`` …) from a counter.
* ``GET /v1/contexts/{id}/context``: answers the window that the harness
  primed for that path, serialised on every request as the server does.
* ``PUT /_bench/prime/{id}``: stores the JSON body as that context's window
  (the harness copies the server's real window here, so both answer the
  same bytes).

Run: ``python bench/baselines/bare_aiohttp.py --port N [--json orjson] [--loop uvloop]``.
"""

from __future__ import annotations

import argparse
import uuid

import stack
from aiohttp import web

CREATED_AT = "2026-11-21T21:52:42.287Z"


def build_app(loads: stack.Loads, dumps: stack.Dumps) -> web.Application:
    windows: dict[str, object] = {}
    last_seq: dict[str, int] = {}

    async def put_context(request: web.Request) -> web.Response:
        body = loads(await request.read())
        return stack.json_response(dumps, {"id": request.match_info["id"], **body})

    async def append(request: web.Request) -> web.Response:
        body = loads(await request.read())
        context = request.match_info["id"]
        count = len(body["messages"]) if "messages" in body else 1
        first = last_seq.get(context, 0) + 1
        last = last_seq[context] = first + count - 1
        stored = [
            {
                "seq": seq,
                "id": f"msg_{uuid.uuid4().hex}",
                "token_count": 0,
                "created_at": CREATED_AT,
            }
            for seq in range(first, last + 1)
        ]
        answer: dict[str, object] = {
            "version": last + 1,
            "last_seq": last,
            "used_tokens": 0,
            "needs_compaction": False,
            "messages": stored,
        }
        if count == 1:
            answer = {"seq": first, "token_estimate": 0, **answer}
        return stack.json_response(dumps, answer, status=201)

    async def window(request: web.Request) -> web.Response:
        primed = windows.get(request.match_info["id"], {"messages": [], "used_tokens": 0})
        return stack.json_response(dumps, primed)

    async def prime(request: web.Request) -> web.Response:
        windows[request.match_info["id"]] = loads(await request.read())
        return stack.json_response(dumps, {"ok": True})

    async def ready(request: web.Request) -> web.Response:
        return stack.json_response(dumps, {"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_put("/v1/contexts/{id}", put_context)
    app.router.add_post("/v1/contexts/{id}/messages", append)
    app.router.add_get("/v1/contexts/{id}/context", window)
    app.router.add_put("/_bench/prime/{id}", prime)
    app.router.add_get("/health/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    stack.add_arguments(parser)
    args = parser.parse_args()
    loads, dumps = stack.json_functions(args.json)
    stack.run(build_app(loads, dumps), args.port, args.loop)


if __name__ == "__main__":
    main()
