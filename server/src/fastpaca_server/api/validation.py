"""Request parsing: JSON bodies and query strings into checked values.

Every function raises :class:`~fastpaca_server.core.InvalidInput` with a
sentence that names the offending field; nothing here touches state.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import attrs

from ..core import InvalidInput, listing
from ..core.models import (
    DEFAULT_KEEP_TOOL_RESULTS,
    DEFAULT_LAST_N_LIMIT,
    DEFAULT_PLACEHOLDER,
    DEFAULT_SKIP_KINDS,
    DEFAULT_TARGET_RATIO,
    DEFAULT_TRIGGER_RATIO,
    MAX_AGE_SECONDS,
    MAX_METADATA_BYTES,
    MAX_PIPELINE_STEPS,
    MAX_POLICY_LIMIT,
    MAX_TOKEN_BUDGET,
    STEP_STRATEGIES,
    STRATEGIES,
    TOKENIZERS,
    ContextConfig,
    JSONObject,
    Policy,
    canonical_json,
)
from ..replication.cluster import split_address
from ..replication.shards import MAX_GROUPS

CONTEXT_ID = re.compile(r"[A-Za-z0-9._:-]{1,256}")
MAX_PAGE = 1000
MAX_BATCH = 1000
MAX_PARTS = 1000
MAX_ID_LENGTH = 256
MAX_ROLE_LENGTH = 64
MAX_PART_TYPE_LENGTH = 128
MAX_SKIP_KINDS = 64
MAX_OFFSET = 10**12
MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays a request body may have (the body itself is 1)."""
DEFAULT_TAIL_LIMIT = 100


def context_id(raw: str) -> str:
    if not CONTEXT_ID.fullmatch(raw) or not raw.strip("."):
        raise InvalidInput(
            "Context ids are 1-256 characters of letters, digits, '.', '_', ':' and '-', "
            "and not only dots.",
            "invalid_context_id",
        )
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_body(raw: bytes) -> JSONObject:
    """Parse a JSON object body: UTF-8, no NaN/Infinity or numbers that overflow
    to them, no unpaired surrogates (they cannot be written back as UTF-8)."""
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        if _SURROGATE_ESCAPE.search(raw):
            canonical_json(value)  # raises UnicodeEncodeError on an unpaired surrogate
    except UnicodeEncodeError:
        raise InvalidInput(
            "The body contains an unpaired UTF-16 surrogate escape.", "invalid_json"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInput(f"The body is not valid JSON: {error}.", "invalid_json") from None
    if not isinstance(value, dict):
        raise InvalidInput("The body must be a JSON object.", "invalid_json")
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise InvalidInput(
            f"The body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep.",
            "invalid_json",
        )
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _only(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidInput(
            f"Unknown field{'s' if len(unknown) > 1 else ''} in {where}: {', '.join(unknown)}.",
            "unknown_field",
        )


def integer(value: Any, name: str, *, minimum: int, maximum: int) -> int:
    """An integer in bounds. A whole-number float (``5.0``) is an integer, as in JSON Schema."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be an integer.")
    if not minimum <= value <= maximum:
        raise InvalidInput(f"'{name}' must be between {minimum} and {maximum}.")
    return value


def string(value: Any, name: str, *, max_length: int, min_length: int = 1) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string.")
    if not min_length <= len(value) <= max_length:
        raise InvalidInput(f"'{name}' must be {min_length}-{max_length} characters long.")
    return value


def _object(value: Any, name: str) -> JSONObject:
    if not isinstance(value, dict):
        raise InvalidInput(f"'{name}' must be a JSON object.")
    return value


def metadata(value: Any, name: str = "metadata") -> JSONObject:
    obj = _object(value, name)
    if len(canonical_json(obj)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"'{name}' is larger than {MAX_METADATA_BYTES} bytes.")
    return obj


def fingerprint(request: JSONObject) -> str:
    """What identifies a request for idempotency: its *normalised* content.

    Callers pass the parsed request (absent and ``null`` optional fields
    alike left out, whole-number floats made integers, read-only fields
    dropped), so two bodies that mean the same request match.
    """
    return hashlib.sha256(canonical_json(request)).hexdigest()


# --- contexts ---------------------------------------------------------------


def context_config(
    body: JSONObject, custom: Collection[str] = ()
) -> tuple[ContextConfig, JSONObject | None]:
    """Parse a PUT body into a config and optional metadata (``custom``: the
    custom strategies installed)."""
    _only(body, {"token_budget", "trigger_ratio", "policy", "tokenizer", "metadata"}, "the body")
    if "token_budget" not in body:
        raise InvalidInput("'token_budget' is required.")
    budget = integer(body["token_budget"], "token_budget", minimum=1, maximum=MAX_TOKEN_BUDGET)
    ratio = _ratio(body.get("trigger_ratio", DEFAULT_TRIGGER_RATIO), "trigger_ratio")
    tokenizer = body.get("tokenizer", "o200k_base")
    if tokenizer not in TOKENIZERS:
        raise InvalidInput(f"'tokenizer' must be one of {', '.join(TOKENIZERS)}.")
    config = ContextConfig(
        token_budget=budget,
        trigger_ratio=ratio,
        policy=policy(body.get("policy", {"strategy": "last_n"}), custom=custom),
        tokenizer=tokenizer,
    )
    meta = metadata(body["metadata"]) if "metadata" in body else None
    return config, meta


def preview_config(
    body: JSONObject, current: ContextConfig, custom: Collection[str] = ()
) -> ContextConfig:
    """The config of ``POST …/preview``: the context's own, with what the body sets."""
    _only(body, {"token_budget", "trigger_ratio", "policy", "tokenizer"}, "the body")
    given = {
        "token_budget": body.get("token_budget", current.token_budget),
        "trigger_ratio": body.get("trigger_ratio", current.trigger_ratio),
        "tokenizer": body.get("tokenizer", current.tokenizer),
        "policy": body.get("policy", {"strategy": "manual"}),
    }
    config, _ = context_config(given, custom)
    if "policy" not in body:
        config = attrs.evolve(config, policy=current.policy)
    return config


def _ratio(value: Any, name: str) -> float:
    """A number in (0, 1]."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= 1
    ):
        raise InvalidInput(f"'{name}' must be a number in (0, 1].")
    return float(value)


MAX_PLACEHOLDER_LENGTH = 1000
MAX_EXCLUDED_TOOLS = 64
MAX_INSTRUCTIONS_LENGTH = 8000
PINS = ("system", "none")


def policy(value: Any, *, custom: Collection[str] = (), step: bool = False) -> Policy:
    """A policy: a built-in strategy, a ``pipeline`` of them, or one of ``custom``
    (installed ``fastpaca.policies`` entry points). Configs come back normalised:
    defaults filled in, ``pin`` only when it is not the default."""
    where = "'policy.steps[]'" if step else "'policy'"
    obj = _object(value, where.strip("'"))
    _only(obj, {"strategy", "config"}, where)
    strategy = obj.get("strategy")
    allowed = STEP_STRATEGIES if step else STRATEGIES
    if not isinstance(strategy, str) or (strategy not in allowed and strategy not in custom):
        names = ", ".join([*allowed, *sorted(custom)])
        raise InvalidInput(f"'{where.strip(chr(39))}.strategy' must be one of {names}.")
    options = dict(_object(obj.get("config", {}), "policy.config"))
    pin = options.pop("pin", "system")
    if pin not in PINS or (step and "pin" in obj.get("config", {})):
        raise InvalidInput(
            '\'policy.config.pin\' must be "system" or "none" (on the policy, not on a step).'
        )
    if strategy in custom and strategy not in STRATEGIES:
        if len(canonical_json(options)) > MAX_METADATA_BYTES:
            raise InvalidInput(f"'policy.config' is larger than {MAX_METADATA_BYTES} bytes.")
        config = options
    else:
        config = _strategy_config(strategy, options, custom)
    if pin != "system":
        config["pin"] = pin
    return Policy(strategy=strategy, config=config)


def _strategy_config(strategy: str, options: JSONObject, custom: Collection[str]) -> JSONObject:
    def only(*names: str) -> None:
        _only(options, set(names), f"'policy.config' of the {strategy} strategy")

    def target() -> float:
        return _ratio(
            options.get("target_ratio", DEFAULT_TARGET_RATIO), "policy.config.target_ratio"
        )

    if strategy == "manual":
        only()
        return {}
    if strategy == "time_window":
        only("max_age_seconds")
        if "max_age_seconds" not in options:
            raise InvalidInput("'policy.config.max_age_seconds' is required for time_window.")
        age = integer(
            options["max_age_seconds"],
            "policy.config.max_age_seconds",
            minimum=1,
            maximum=MAX_AGE_SECONDS,
        )
        return {"max_age_seconds": age}
    if strategy == "budget":
        only("target_ratio")
        return {"target_ratio": target()}
    if strategy == "summarize":
        only("target_ratio", "instructions")
        config: JSONObject = {"target_ratio": target()}
        if options.get("instructions") is not None:
            config["instructions"] = string(
                options["instructions"],
                "policy.config.instructions",
                max_length=MAX_INSTRUCTIONS_LENGTH,
            )
        return config
    if strategy == "strip_tool_results":
        only("keep", "placeholder", "exclude_tools", "clear_at_least", "target_ratio")
        excluded = options.get("exclude_tools", [])
        if not isinstance(excluded, list) or len(excluded) > MAX_EXCLUDED_TOOLS:
            raise InvalidInput(
                f"'policy.config.exclude_tools' must be a list of at most {MAX_EXCLUDED_TOOLS} "
                "tool names."
            )
        return {
            "keep": integer(
                options.get("keep", DEFAULT_KEEP_TOOL_RESULTS),
                "policy.config.keep",
                minimum=0,
                maximum=MAX_POLICY_LIMIT,
            ),
            "placeholder": string(
                options.get("placeholder", DEFAULT_PLACEHOLDER),
                "policy.config.placeholder",
                max_length=MAX_PLACEHOLDER_LENGTH,
            ),
            "exclude_tools": [
                string(name, "policy.config.exclude_tools[]", max_length=MAX_ID_LENGTH)
                for name in excluded
            ],
            "clear_at_least": integer(
                options.get("clear_at_least", 0),
                "policy.config.clear_at_least",
                minimum=0,
                maximum=MAX_TOKEN_BUDGET,
            ),
            "target_ratio": target(),
        }
    if strategy == "pipeline":
        only("steps")
        steps = options.get("steps")
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_PIPELINE_STEPS:
            raise InvalidInput(
                f"'policy.config.steps' must be a list of 1-{MAX_PIPELINE_STEPS} policies."
            )
        parsed = [policy(item, custom=(), step=True) for item in steps]
        return {"steps": [{"strategy": p.strategy, "config": p.config} for p in parsed]}
    only("limit", *(["skip_kinds"] if strategy == "skip_parts" else []))
    config = {
        "limit": integer(
            options.get("limit", DEFAULT_LAST_N_LIMIT),
            "policy.config.limit",
            minimum=1,
            maximum=MAX_POLICY_LIMIT,
        )
    }
    if strategy == "skip_parts":
        kinds = options.get("skip_kinds", list(DEFAULT_SKIP_KINDS))
        if not isinstance(kinds, list) or len(kinds) > MAX_SKIP_KINDS:
            raise InvalidInput(
                f"'policy.config.skip_kinds' must be a list of at most {MAX_SKIP_KINDS} strings."
            )
        config["skip_kinds"] = [
            string(kind, "policy.config.skip_kinds[]", max_length=MAX_PART_TYPE_LENGTH)
            for kind in kinds
        ]
    return config


# --- messages ---------------------------------------------------------------


_MESSAGE_FIELDS = {"id", "role", "parts", "metadata", "token_count"}
_WINDOW_FIELDS = {"seq", "created_at"}
"""Read-only fields of a message read from ``GET …/context``; a compaction accepts them."""


def message(value: Any, name: str, *, from_window: bool = False) -> JSONObject:
    """Check one UIMessage-shaped object; returns it normalised.

    The result has ``role`` and ``parts``, and ``id``, ``metadata`` and
    ``token_count`` only when they were given and not ``null`` (ids are filled
    in later). With ``from_window`` (compaction), the read-only fields of a
    window message are accepted: ``created_at`` is ignored and a ``seq``
    (not ``null``) is kept in the result.
    """
    obj = _object(value, name)
    if "content" in obj and "parts" not in obj:
        raise InvalidInput(
            f"Unknown field in '{name}': content. Fastpaca messages carry their content in "
            f"'parts' (ai-sdk UIMessage shape): send "
            '"parts": [{"type": "text", "text": "..."}] instead of "content".',
            "unknown_field",
        )
    _only(obj, _MESSAGE_FIELDS | (_WINDOW_FIELDS if from_window else set()), f"'{name}'")
    if "role" not in obj:
        raise InvalidInput(f"'{name}.role' is required.")
    result: JSONObject = {"role": string(obj["role"], f"{name}.role", max_length=MAX_ROLE_LENGTH)}
    if obj.get("id") is not None:
        result["id"] = string(obj["id"], f"{name}.id", max_length=MAX_ID_LENGTH)
    parts = obj.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidInput(f"'{name}.parts' must be a non-empty list.")
    if len(parts) > MAX_PARTS:
        raise InvalidInput(f"'{name}.parts' has more than {MAX_PARTS} parts.")
    for index, part in enumerate(parts):
        _part(part, f"{name}.parts[{index}]")
    result["parts"] = parts
    if obj.get("metadata") is not None:
        result["metadata"] = metadata(obj["metadata"], f"{name}.metadata")
    if obj.get("token_count") is not None:
        result["token_count"] = integer(
            obj["token_count"], f"{name}.token_count", minimum=0, maximum=MAX_TOKEN_BUDGET
        )
    if from_window:
        if obj.get("created_at") is not None:
            string(obj["created_at"], f"{name}.created_at", max_length=64, min_length=0)
        if obj.get("seq") is not None:
            result["seq"] = integer(obj["seq"], f"{name}.seq", minimum=1, maximum=MAX_OFFSET)
    return result


def _part(value: Any, name: str) -> None:
    part = _object(value, name)
    string(part.get("type"), f"{name}.type", max_length=MAX_PART_TYPE_LENGTH)
    if part["type"] == "tool_call":
        if "id" in part:  # without an id, nothing can pair with the call
            string(part["id"], f"{name}.id", max_length=MAX_ID_LENGTH)
        string(part.get("name"), f"{name}.name", max_length=MAX_ID_LENGTH)
    elif part["type"] == "tool_result":
        string(part.get("tool_call_id"), f"{name}.tool_call_id", max_length=MAX_ID_LENGTH)
    elif part["type"] == "text" and not isinstance(part.get("text"), str):
        raise InvalidInput(f"'{name}.text' must be a string.")


def append_body(body: JSONObject) -> tuple[list[JSONObject], str | None, int | None]:
    """``(messages, idempotency_key, if_version)`` of an append request."""
    stray = sorted(set(body) & (_MESSAGE_FIELDS | {"content"}))
    if stray and "message" not in body and "messages" not in body:
        raise InvalidInput(
            f"Unknown field{'s' if len(stray) > 1 else ''} in the body: {', '.join(stray)}. "
            'Wrap the message in "message": {"message": {"role": "user", "parts": '
            '[{"type": "text", "text": "..."}]}} (or send a list as "messages").',
            "unknown_field",
        )
    _only(body, {"message", "messages", "idempotency_key", "if_version"}, "the body")
    if ("message" in body) == ("messages" in body):
        raise InvalidInput("Send either 'message' (one) or 'messages' (a batch).")
    if "message" in body:
        messages = [message(body["message"], "message")]
    else:
        batch = body["messages"]
        if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH:
            raise InvalidInput(f"'messages' must be a list of 1-{MAX_BATCH} messages.")
        messages = [message(item, f"messages[{i}]") for i, item in enumerate(batch)]
    return messages, idempotency_key(body), if_version(body)


def compact_body(body: JSONObject) -> tuple[list[JSONObject], str | None, int | None]:
    """``(replacement, idempotency_key, if_version)`` of a compaction.

    Items with a ``seq`` keep that log message (read-only ``token_count`` and
    ``created_at`` are dropped); their seqs must increase through the list.
    """
    _only(body, {"replacement", "idempotency_key", "if_version"}, "the body")
    replacement = body.get("replacement")
    if not isinstance(replacement, list) or len(replacement) > MAX_BATCH:
        raise InvalidInput(f"'replacement' must be a list of at most {MAX_BATCH} messages.")
    items = []
    previous = 0
    for index, raw in enumerate(replacement):
        item = message(raw, f"replacement[{index}]", from_window=True)
        if "seq" in item:
            item.pop("token_count", None)
            if item["seq"] <= previous:
                raise InvalidInput(
                    f"replacement[{index}] keeps seq {item['seq']} after seq {previous}: "
                    "kept log messages must appear once each, in seq order.",
                )
            previous = item["seq"]
        items.append(item)
    return items, idempotency_key(body), if_version(body)


def metadata_patch(body: JSONObject) -> tuple[JSONObject, int | None]:
    _only(body, {"metadata", "if_version"}, "the body")
    if "metadata" not in body:
        raise InvalidInput("'metadata' is required.")
    return metadata(body["metadata"]), if_version(body)


def idempotency_key(body: JSONObject) -> str | None:
    key = body.get("idempotency_key")
    return None if key is None else string(key, "idempotency_key", max_length=MAX_ID_LENGTH)


def if_version(body: JSONObject) -> int | None:
    value = body.get("if_version")
    return None if value is None else integer(value, "if_version", minimum=0, maximum=2**62)


# --- query strings ----------------------------------------------------------


def query(
    params: Mapping[str, str], allowed: dict[str, tuple[int, int]], defaults: dict[str, int]
) -> dict[str, int]:
    """Integer query parameters within ``allowed`` bounds; unknown names are refused."""
    _only(params, set(allowed), "the query string")
    result = dict(defaults)
    for name, raw in params.items():
        getall = getattr(params, "getall", None)
        if getall is not None and len(getall(name)) > 1:
            raise InvalidInput(f"'{name}' is given more than once.")
        if not re.fullmatch(r"-?[0-9]{1,19}", raw):
            raise InvalidInput(f"'{name}' must be an integer.")
        low, high = allowed[name]
        result[name] = integer(int(raw), name, minimum=low, maximum=high)
    return result


MAX_METADATA_FILTERS = 16
MAX_FILTER_LENGTH = 1024
_S = TypeVar("_S", bound=str)


def _one_of(value: str, options: tuple[_S, ...], name: str) -> _S:
    for option in options:
        if option == value:
            return option
    raise InvalidInput(f"'{name}' must be one of {', '.join(options)}.")


def list_query(params: Mapping[str, str]) -> listing.ListQuery:
    """``GET /v1/contexts``: ``limit``, ``cursor``, ``order``, ``prefix``, ``q``,
    ``status`` and ``metadata.<key>`` filters, each given at most once."""
    getall = getattr(params, "getall", None)
    filters: dict[str, str] = {}
    plain: dict[str, str] = {}
    for name, value in params.items():
        if getall is not None and len(getall(name)) > 1:
            raise InvalidInput(f"'{name}' is given more than once.")
        if len(value) > MAX_FILTER_LENGTH:
            raise InvalidInput(f"'{name}' is longer than {MAX_FILTER_LENGTH} characters.")
        if name.startswith("metadata."):
            key = name[len("metadata.") :]
            if not 1 <= len(key) <= MAX_ID_LENGTH:
                raise InvalidInput(f"A metadata filter's key is 1-{MAX_ID_LENGTH} characters.")
            filters[key] = value
        else:
            plain[name] = value
    _only(plain, {"limit", "cursor", "order", "prefix", "q", "status"}, "the query string")
    if len(filters) > MAX_METADATA_FILTERS:
        raise InvalidInput(f"At most {MAX_METADATA_FILTERS} metadata filters are allowed.")
    limit = query(
        {"limit": plain["limit"]} if "limit" in plain else {}, {"limit": (1, MAX_PAGE)}, {}
    )
    order = _one_of(plain.get("order", "id"), listing.ORDERS, "order")
    cursor = plain.get("cursor")
    return listing.ListQuery(
        order=order,
        after=None if cursor is None else listing.decode_cursor(cursor, order),
        limit=limit.get("limit", 50),
        prefix=plain.get("prefix", ""),
        search=plain.get("q", ""),
        metadata=tuple(sorted(filters.items())),
        status=_one_of(plain.get("status", "active"), listing.STATUSES, "status"),
    )


def raft_address(value: Any, name: str) -> str:
    """A ``host:port`` Raft address (a host name, IPv4, or ``[IPv6]``; port 1-65535)."""
    text = string(value, name, max_length=255)
    try:
        host, port = split_address(text)
    except ValueError:
        raise InvalidInput(f"'{name}' must be a host:port address, not {text!r}.") from None
    if not host or any(c.isspace() for c in text) or port + MAX_GROUPS > 65536:
        raise InvalidInput(f"'{name}' must be a host:port address, not {text!r}.")
    return text


def member_body(body: JSONObject) -> str:
    """The Raft address of ``POST /v1/cluster/members``."""
    _only(body, {"raft_address"}, "the body")
    if "raft_address" not in body:
        raise InvalidInput("'raft_address' is required.")
    return raft_address(body["raft_address"], "raft_address")
