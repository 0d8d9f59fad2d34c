"""Server configuration: one value object, filled from flags or ``FASTPACA_*`` variables."""

from __future__ import annotations

import attrs

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4000
    data_dir: str = "./data"
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_compaction_entries: int = 100_000
    submit_timeout: float = 10.0
    repair_journal: bool = False
