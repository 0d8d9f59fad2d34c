"""The async twins have the same public surface as the sync classes: same method
names, parameters, defaults and (sync ↔ async-translated) annotations."""

from __future__ import annotations

import inspect

import pytest
from fastpaca import (
    AsyncContext,
    AsyncContextStream,
    AsyncFastpaca,
    Context,
    ContextStream,
    Fastpaca,
)

ASYNC_TO_SYNC = [
    ("AsyncContextStream", "ContextStream"),
    ("AsyncStreamFunction", "StreamFunction"),
    ("AsyncFastpaca", "Fastpaca"),
    ("AsyncContext", "Context"),
    ("AsyncIterator", "Iterator"),
    ("httpx.AsyncClient", "httpx.Client"),
]
DUNDER_TWINS = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
}
ASYNC_ONLY = {"aclose"}  # AsyncContextStream.aclose is close, for contextlib.aclosing

PAIRS = [(Fastpaca, AsyncFastpaca), (Context, AsyncContext), (ContextStream, AsyncContextStream)]


def public_methods(cls: type) -> dict[str, object]:
    names = {name for name in dir(cls) if not name.startswith("_")}
    names |= {name for name in (*DUNDER_TWINS, *DUNDER_TWINS.values()) if name in dir(cls)}
    return {name: getattr(cls, name) for name in names if callable(getattr(cls, name))}


def as_sync(text: str) -> str:
    for async_name, sync_name in ASYNC_TO_SYNC:
        text = text.replace(async_name, sync_name)
    return text


def described(function: object) -> list[tuple[str, object, object, str]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [
        (name, parameter.kind, parameter.default, as_sync(str(parameter.annotation)))
        for name, parameter in signature.parameters.items()
    ]


@pytest.mark.parametrize(("sync_class", "async_class"), PAIRS, ids=lambda cls: cls.__name__)
def test_same_methods(sync_class: type, async_class: type) -> None:
    sync_names = set(public_methods(sync_class))
    async_names = {DUNDER_TWINS.get(name, name) for name in public_methods(async_class)}
    assert async_names - ASYNC_ONLY == sync_names


@pytest.mark.parametrize(("sync_class", "async_class"), PAIRS, ids=lambda cls: cls.__name__)
def test_same_signatures(sync_class: type, async_class: type) -> None:
    sync_methods = public_methods(sync_class)
    for async_name, async_method in public_methods(async_class).items():
        if async_name in ASYNC_ONLY:
            continue
        sync_name = DUNDER_TWINS.get(async_name, async_name)
        sync_method = sync_methods[sync_name]
        where = f"{async_class.__name__}.{async_name}"
        assert described(async_method) == described(sync_method), where
        sync_return = inspect.signature(sync_method).return_annotation  # type: ignore[arg-type]
        async_return = inspect.signature(async_method).return_annotation  # type: ignore[arg-type]
        assert as_sync(str(async_return)) == str(sync_return), where


@pytest.mark.parametrize(("sync_class", "async_class"), PAIRS, ids=lambda cls: cls.__name__)
def test_async_methods_are_async(sync_class: type, async_class: type) -> None:
    for name, method in public_methods(async_class).items():
        if name in ("__aiter__",):
            continue
        sync_name = DUNDER_TWINS.get(name, name)
        sync_method = public_methods(sync_class)[sync_name] if name not in ASYNC_ONLY else None
        if inspect.isgeneratorfunction(sync_method):
            assert inspect.isasyncgenfunction(method), name
        else:
            assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method), name


@pytest.mark.parametrize(
    "cls", [cls for pair in PAIRS for cls in pair], ids=lambda cls: cls.__name__
)
def test_public_methods_have_docstrings(cls: type) -> None:
    for name, method in public_methods(cls).items():
        if not name.startswith("__"):
            assert inspect.getdoc(method), f"{cls.__name__}.{name} has no docstring"
