"""``fastpaca keys new|hash``: keys a server's keys file accepts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from fastpaca_server.access import hash_key

from tests.cli._cli import run
from tests.support.server import ServerProcess


def test_a_new_key_works_against_a_server_with_its_hash(tmp_path: Path) -> None:
    made = run("keys", "new")
    assert made.status == 0, made.stderr
    fields = dict(line.split(":", 1) for line in made.stdout.splitlines())
    key, digest = fields["key"].strip(), fields["sha256"].strip()
    assert key.startswith("fp_") and len(key) == 3 + 64
    assert digest == hash_key(key)  # the server's own hash
    hashed = run("keys", "hash", input=f"{key}\n".encode())
    assert hashed.status == 0 and hashed.stdout == digest + "\n"
    assert run("keys", "new").stdout != made.stdout  # random each time

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(
        json.dumps({"keys": [{"name": "cli", "scopes": ["read"], "sha256": digest}]})
    )
    server = ServerProcess(tmp_path / "data", "--keys-file", str(keys_file)).start()
    try:
        ok = httpx.get(f"{server.url}/v1/contexts", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        wrong = httpx.get(f"{server.url}/v1/contexts", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
    finally:
        server.stop()


def test_hash_without_a_key_on_stdin_fails() -> None:
    result = run("keys", "hash", input=b"")
    assert result.status == 1 and "error: invalid_key:" in result.stderr
