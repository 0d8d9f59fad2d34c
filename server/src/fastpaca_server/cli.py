"""``fastpaca-server``: run one node. Every flag also reads a ``FASTPACA_*`` variable."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from .api import create_app
from .config import DEFAULT_MAX_BODY_BYTES, ServerConfig


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"FASTPACA_{name}", default)


def parse_args(argv: Sequence[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(
        prog="fastpaca-server",
        description="Fastpaca: message logs and token-budgeted LLM windows over REST.",
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="[FASTPACA_HOST]")
    parser.add_argument(
        "--port", type=int, default=int(_env("PORT", "4000") or 4000), help="[FASTPACA_PORT]"
    )
    parser.add_argument(
        "--data-dir",
        default=_env("DATA_DIR", "./data"),
        help="journal and snapshots [FASTPACA_DATA_DIR]",
    )
    parser.add_argument(
        "--api-key",
        default=_env("API_KEY", None),
        help="require 'Authorization: Bearer KEY' on /v1 routes [FASTPACA_API_KEY]",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES)) or 0),
        help="larger request bodies get 413 [FASTPACA_MAX_BODY_BYTES]",
    )
    parser.add_argument(
        "--log-compaction-entries",
        type=int,
        default=int(_env("LOG_COMPACTION_ENTRIES", "100000") or 0),
        help="snapshot and compact the Raft journal past this many entries "
        "[FASTPACA_LOG_COMPACTION_ENTRIES]",
    )
    parser.add_argument(
        "--submit-timeout",
        type=float,
        default=float(_env("SUBMIT_TIMEOUT", "10") or 10),
        help="seconds to wait for a write to commit before answering 503 [FASTPACA_SUBMIT_TIMEOUT]",
    )
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1024 or args.log_compaction_entries < 2 or args.submit_timeout <= 0:
        parser.error(
            "--max-body-bytes >= 1024, --log-compaction-entries >= 2, --submit-timeout > 0"
        )
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_key=args.api_key or None,
        max_body_bytes=args.max_body_bytes,
        log_compaction_entries=args.log_compaction_entries,
        submit_timeout=args.submit_timeout,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        print=lambda _: print(
            f"fastpaca listening on http://{config.host}:{config.port} "
            f"(data in {os.path.abspath(config.data_dir)})",
            flush=True,
        ),
        access_log=None,
    )
