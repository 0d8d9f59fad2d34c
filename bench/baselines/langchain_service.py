"""Baseline 2: what a LangChain user builds instead of Fastpaca.

An aiohttp service over ``langchain-postgres``' ``PostgresChatMessageHistory``
(one row per message in PostgreSQL, ``psycopg`` 3 with a connection pool)
that builds the LLM window on every read with langchain-core's
``trim_messages`` and a tiktoken counter. It answers the same paths and
bodies as the server:

* ``PUT /v1/contexts/{id}``: remembers ``token_budget`` (the window's limit).
* ``POST /v1/contexts/{id}/messages``: ``aadd_messages`` of the message (or
  the batch), committed to PostgreSQL (durable, like the server's fsync).
* ``GET /v1/contexts/{id}/context``: ``aget_messages`` (the whole history),
  ``trim_messages(strategy="last", max_tokens=token_budget)``, rendered as
  UIMessage-shaped JSON with ``used_tokens``.

The tiktoken encoding comes from the server's offline loader
(``fastpaca_server.tokens.encoding``) and counts a message as the server
does (text tokens + 4), so both build the same window from the same
history.

Run: ``python bench/baselines/langchain_service.py --port N --dsn postgresql://…``.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import stack
from aiohttp import web
from fastpaca_server.tokens import encoding
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    trim_messages,
)
from langchain_postgres import PostgresChatMessageHistory
from psycopg_pool import AsyncConnectionPool

TABLE = "chat_history"
SESSION_NAMESPACE = uuid.UUID("6f1c1c52-5d55-4a55-9a43-0c3f3b7c1f00")
MESSAGE_OVERHEAD = 4
DEFAULT_BUDGET = 8_000


def session_id(context_id: str) -> str:
    """PostgresChatMessageHistory wants a UUID per session."""
    return str(uuid.uuid5(SESSION_NAMESPACE, context_id))


def to_langchain(message: dict[str, Any]) -> BaseMessage:
    text = "".join(part.get("text", "") for part in message["parts"] if part["type"] == "text")
    role = message["role"]
    if role == "assistant":
        return AIMessage(content=text)
    if role == "system":
        return SystemMessage(content=text)
    return HumanMessage(content=text)


def to_ui_message(message: BaseMessage) -> dict[str, Any]:
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return {"role": role, "parts": [{"type": "text", "text": message.content}]}


def build_app(dsn: str, pool_size: int, loads: stack.Loads, dumps: stack.Dumps) -> web.Application:
    tokenizer = encoding("o200k_base")

    def count_tokens(messages: Sequence[BaseMessage]) -> int:
        # The tiktoken counter of LangChain's trim_messages how-to, counted as the server does.
        return sum(
            len(tokenizer.encode_ordinary(str(message.content))) + MESSAGE_OVERHEAD
            for message in messages
        )

    budgets: dict[str, int] = {}
    pool = AsyncConnectionPool(dsn, min_size=pool_size, max_size=pool_size, open=False)

    async def database(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        async with pool.connection() as connection:
            await PostgresChatMessageHistory.acreate_tables(connection, TABLE)
        yield
        await pool.close()

    async def put_context(request: web.Request) -> web.Response:
        body = loads(await request.read())
        budgets[request.match_info["id"]] = int(body.get("token_budget", DEFAULT_BUDGET))
        return stack.json_response(dumps, {"id": request.match_info["id"], **body})

    async def append(request: web.Request) -> web.Response:
        body = loads(await request.read())
        raw = body["messages"] if "messages" in body else [body["message"]]
        messages = [to_langchain(message) for message in raw]
        async with pool.connection() as connection:
            history = PostgresChatMessageHistory(
                TABLE, session_id(request.match_info["id"]), async_connection=connection
            )
            await history.aadd_messages(messages)
        return stack.json_response(dumps, {"stored": len(messages)}, status=201)

    async def window(request: web.Request) -> web.Response:
        context_id = request.match_info["id"]
        async with pool.connection() as connection:
            history = PostgresChatMessageHistory(
                TABLE, session_id(context_id), async_connection=connection
            )
            messages = await history.aget_messages()
        trimmed = trim_messages(
            messages,
            max_tokens=budgets.get(context_id, DEFAULT_BUDGET),
            token_counter=count_tokens,
            strategy="last",
            include_system=True,
            allow_partial=False,
        )
        body = {
            "messages": [to_ui_message(message) for message in trimmed],
            "used_tokens": count_tokens(trimmed),
        }
        return stack.json_response(dumps, body)

    async def ready(request: web.Request) -> web.Response:
        return stack.json_response(dumps, {"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(database)
    app.router.add_put("/v1/contexts/{id}", put_context)
    app.router.add_post("/v1/contexts/{id}/messages", append)
    app.router.add_get("/v1/contexts/{id}/context", window)
    app.router.add_get("/health/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    stack.add_arguments(parser)
    parser.add_argument("--dsn", required=True, help="postgresql://… of the throwaway cluster")
    parser.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args()
    loads, dumps = stack.json_functions(args.json)
    stack.run(build_app(args.dsn, args.pool_size, loads, dumps), args.port, args.loop)


if __name__ == "__main__":
    main()
