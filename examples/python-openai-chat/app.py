"""A small chat backend: Fastpaca keeps the conversation, OpenAI writes the answers.

Routes:

* ``POST /chat/{conversation_id}`` with ``{"message": "..."}`` appends the user
  message to the Fastpaca context ``conversation_id`` (created on first use),
  then runs ``ctx.stream(...)``: the SDK reads the LLM window, this app calls
  ``chat.completions.create(..., stream=True)`` with it, the answer text is
  streamed back to the HTTP client as it arrives (``text/plain``, chunked), and
  once the model's stream ends the SDK appends the assistant message to the
  context, once.
* ``GET /history/{conversation_id}?after_seq=0&limit=50`` returns one page of
  the context's log (``ctx.messages``), oldest first, with ``has_more`` and
  ``next_after_seq`` to fetch the next page.
* ``POST /v1/chat/completions`` (only with ``--fake-model``): a canned
  OpenAI-compatible model, so the example runs offline. The OpenAI client's
  ``base_url`` points at this same app.

Run it (a Fastpaca server must be running, ``make serve``)::

    .venv/bin/python examples/python-openai-chat/app.py            # fake model without a key
    OPENAI_API_KEY=sk-... .venv/bin/python examples/python-openai-chat/app.py

See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import fastpaca
from aiohttp import web
from fastpaca import AsyncContext, AsyncFastpaca
from fastpaca_openai import to_openai_messages
from openai import AsyncOpenAI

log = logging.getLogger("python-openai-chat")

SYSTEM_PROMPT = "You are a friendly, concise assistant."
BUDGET_TOKENS = 8000
POLICY = "last_n"
HISTORY_PAGE_LIMIT = 50
MAX_MESSAGE_CHARS = 16_000

FASTPACA_KEY: web.AppKey[AsyncFastpaca] = web.AppKey("fastpaca", AsyncFastpaca)
OPENAI_KEY: web.AppKey[AsyncOpenAI] = web.AppKey("openai", AsyncOpenAI)
SETTINGS_KEY: web.AppKey[argparse.Namespace] = web.AppKey("settings", argparse.Namespace)
LOCKS_KEY: web.AppKey[dict[str, asyncio.Lock]] = web.AppKey("locks", dict)


def text_message(role: str, text: str) -> dict[str, Any]:
    """A Fastpaca message (ai-sdk ``UIMessage`` shape) with one text part."""
    return {"role": role, "parts": [{"type": "text", "text": text}]}


# -- Fastpaca ---------------------------------------------------------------------


async def open_conversation(app: web.Application, conversation_id: str) -> AsyncContext:
    """The context for ``conversation_id``, created (with the system prompt) on first use.

    A lock per conversation serializes the turns of one conversation in this
    process, so two requests never interleave their messages.
    """
    client = app[FASTPACA_KEY]
    ctx = await client.context(conversation_id)  # no request: just a handle
    try:
        await ctx.get()
        return ctx
    except fastpaca.NotFoundError:
        pass
    ctx = await client.context(conversation_id, budget=BUDGET_TOKENS, policy=POLICY)
    # System messages are pinned by every policy (pin="system" is the default),
    # so the prompt stays in the window however long the conversation gets. The
    # idempotency key makes a second creation (say, by another process) store it once.
    await ctx.append(
        text_message("system", app[SETTINGS_KEY].system),
        idempotency_key=f"{conversation_id}:system-prompt",
    )
    return ctx


# -- routes -----------------------------------------------------------------------


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /chat/{conversation_id}``: append the user message, stream the answer."""
    app = request.app
    conversation_id = request.match_info["conversation_id"]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_error(400, 'the body must be JSON: {"message": "..."}')
    text = body.get("message") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return json_error(400, '"message" must be a non-empty string')
    if len(text) > MAX_MESSAGE_CHARS:
        return json_error(400, f'"message" is longer than {MAX_MESSAGE_CHARS} characters')

    settings = app[SETTINGS_KEY]
    openai = app[OPENAI_KEY]
    lock = app[LOCKS_KEY].setdefault(conversation_id, asyncio.Lock())
    async with lock:
        try:
            ctx = await open_conversation(app, conversation_id)
            appended = await ctx.append(text_message("user", text))
            # ctx.stream reads the window (GET .../context), calls the function with
            # its messages and hands the model's chunks through; when the model's
            # stream ends, the assembled assistant message is appended (POST .../messages).
            stream = await ctx.stream(
                lambda messages: openai.chat.completions.create(
                    model=settings.model,
                    messages=to_openai_messages(messages),
                    stream=True,
                    stream_options={"include_usage": True},
                ),
                metadata={"model": settings.model},
            )
        except fastpaca.FastpacaError as error:
            log.warning("fastpaca: %s", error)
            return json_error(502, f"fastpaca: {error}")
        except Exception as error:  # the model call itself (connection, auth, ...)
            log.warning("model: %s", error)
            return json_error(502, f"model: {error}")

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Conversation-Id": conversation_id,
                "X-User-Seq": str(appended.seq),
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        # Leaving the `async with` before the model's stream ended (the HTTP client
        # went away) closes the stream as abandoned: with the default
        # on_abandon="discard" nothing is appended.
        async with stream:
            try:
                async for chunk in stream:
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta.content:
                            await response.write(choice.delta.content.encode())
            except ConnectionResetError:
                log.info("%s: the client went away; the answer is discarded", conversation_id)
                return response
            except Exception as error:  # the model's stream broke, or the append failed
                log.warning("%s: %s", conversation_id, error)
                await response.write(f"\n[error: {error}]\n".encode())
        if stream.result is not None:
            log.info(
                "%s: user seq %s, assistant seq %s (%s tokens)",
                conversation_id,
                appended.seq,
                stream.result.seq,
                stream.result.token_estimate,
            )
        await response.write_eof()
        return response


async def history(request: web.Request) -> web.Response:
    """``GET /history/{conversation_id}?after_seq=0&limit=50``: one page of the log."""
    conversation_id = request.match_info["conversation_id"]
    try:
        after_seq = int(request.query.get("after_seq", "0"))
        limit = int(request.query.get("limit", str(HISTORY_PAGE_LIMIT)))
    except ValueError:
        return json_error(400, "after_seq and limit must be integers")
    ctx = await request.app[FASTPACA_KEY].context(conversation_id)
    try:
        page = await ctx.messages(after_seq=after_seq, limit=limit)
    except fastpaca.NotFoundError:
        return json_error(404, f"no conversation {conversation_id!r}")
    except fastpaca.BadRequestError as error:
        return json_error(400, str(error))
    except fastpaca.FastpacaError as error:
        return json_error(502, f"fastpaca: {error}")
    return web.json_response(
        {
            "conversation_id": conversation_id,
            "messages": [
                {
                    "seq": message["seq"],
                    "role": message["role"],
                    "text": "".join(
                        part.get("text", "")
                        for part in message["parts"]
                        if part.get("type") == "text"
                    ),
                    "created_at": message.get("created_at"),
                }
                for message in page
            ],
            "last_seq": page.last_seq,
            "has_more": page.has_more,
            "next_after_seq": page[-1]["seq"] if page else after_seq,
        }
    )


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# -- the fake model ---------------------------------------------------------------

CANNED_ANSWERS = [
    "Hello! I am a canned answer from the fake model, streamed word by word.",
    "I remember this conversation: Fastpaca handed me the window with your earlier turns.",
    "Still here. Every answer I stream is appended back to the Fastpaca log once.",
]


def fake_answer(request_body: dict[str, Any]) -> str:
    """The canned answer to a Chat Completions request: it quotes the last user message
    and says how many user turns the window held (so you can see the history arrive)."""
    messages = [m for m in request_body.get("messages") or [] if isinstance(m, dict)]
    user_texts = [m.get("content") for m in messages if m.get("role") == "user"]
    last = user_texts[-1] if user_texts else ""
    if not isinstance(last, str):  # content parts
        last = " ".join(p.get("text", "") for p in last or [] if isinstance(p, dict))
    turn = len(user_texts)
    canned = CANNED_ANSWERS[(turn - 1) % len(CANNED_ANSWERS)] if turn else CANNED_ANSWERS[0]
    return f'[fake model, turn {turn}] You said: "{last}". {canned}'


def word_pieces(text: str) -> list[str]:
    """``"a b c"`` → ``["a", " b", " c"]``: the deltas of a streamed answer."""
    words = text.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


def completion_chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


async def fake_chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: an OpenAI-compatible model with canned answers.

    With ``"stream": true`` it answers Server-Sent Events in the Chat Completions
    streaming format (``chat.completion.chunk`` objects, a usage chunk when
    ``stream_options.include_usage`` is set, then ``data: [DONE]``).
    """
    body = await request.json()
    model = str(body.get("model") or "fake-model")
    answer = fake_answer(body)
    pieces = word_pieces(answer)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }
    completion_id = f"chatcmpl-fake-{uuid.uuid4().hex[:12]}"
    if not body.get("stream"):
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(data: dict[str, Any] | str) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        await response.write(f"data: {payload}\n\n".encode())

    delay = request.app[SETTINGS_KEY].fake_delay
    try:
        await send(completion_chunk(completion_id, model, {"role": "assistant", "content": ""}))
        for piece in pieces:
            await asyncio.sleep(delay)
            await send(completion_chunk(completion_id, model, {"content": piece}))
        await send(completion_chunk(completion_id, model, {}, finish_reason="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        await send("[DONE]")
        await response.write_eof()
    except ConnectionResetError:  # the caller stopped reading (its client went away)
        pass
    return response


# -- the app ----------------------------------------------------------------------


def build_app(settings: argparse.Namespace) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[LOCKS_KEY] = {}
    app.router.add_post("/chat/{conversation_id}", chat)
    app.router.add_get("/history/{conversation_id}", history)
    if settings.fake_model:
        app.router.add_post("/v1/chat/completions", fake_chat_completions)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        app[FASTPACA_KEY] = AsyncFastpaca(base_url=settings.fastpaca_url)
        if settings.fake_model:
            # The same app answers as the model; the key is never checked.
            loopback = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
            app[OPENAI_KEY] = AsyncOpenAI(
                api_key="fake-key", base_url=f"http://{loopback}:{settings.port}/v1"
            )
        else:
            app[OPENAI_KEY] = AsyncOpenAI()  # $OPENAI_API_KEY, $OPENAI_BASE_URL
        yield
        await app[OPENAI_KEY].close()
        await app[FASTPACA_KEY].close()

    app.cleanup_ctx.append(clients)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fastpaca-url",
        default=os.environ.get("FASTPACA_URL", "http://127.0.0.1:4000"),
        help="the Fastpaca server (default: $FASTPACA_URL or http://127.0.0.1:4000)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="listen port (default: %(default)s)")
    parser.add_argument(
        "--model", default=None, help="model name (default: $OPENAI_MODEL, else gpt-4o-mini)"
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--fake-model",
        dest="fake_model",
        action="store_true",
        default=None,
        help="serve canned answers offline (the default when OPENAI_API_KEY is not set)",
    )
    model.add_argument(
        "--real-model",
        dest="fake_model",
        action="store_false",
        help="call OpenAI (needs OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--fake-delay",
        type=float,
        default=0.03,
        help="seconds between the fake model's chunks (default: %(default)s)",
    )
    parser.add_argument("--system", default=SYSTEM_PROMPT, help="system prompt of new chats")
    args = parser.parse_args(argv)
    if args.fake_model is None:
        args.fake_model = not os.environ.get("OPENAI_API_KEY")
    elif not args.fake_model and not os.environ.get("OPENAI_API_KEY"):
        parser.error("--real-model needs OPENAI_API_KEY")
    if args.model is None:
        default_model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        args.model = "fake-model" if args.fake_model else default_model
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per request to Fastpaca and the model
        logging.getLogger(noisy).setLevel(logging.WARNING)
    mode = "fake model (offline)" if args.fake_model else f"OpenAI model {args.model}"
    log.info(
        "chat on http://%s:%s, Fastpaca at %s, %s", args.host, args.port, args.fastpaca_url, mode
    )
    web.run_app(build_app(args), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
