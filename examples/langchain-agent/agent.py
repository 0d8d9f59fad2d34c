"""A LangChain tool-calling agent whose memory is a Fastpaca context.

Start a server first (``make serve``), then run from the repository root::

    .venv/bin/python examples/langchain-agent/agent.py

What it does:

1. creates a context with a 3,000-token budget and the ``strip_tool_results``
   policy (keep the newest 2 tool outputs, replace older ones with a short
   placeholder once the window passes its trigger, 70% of the budget);
2. wraps it in :class:`langchain_fastpaca.FastpacaChatMessageHistory`;
3. runs ``--turns`` user turns. Each turn adds the user message to the history,
   then loops: the model reads ``history.messages`` (the context's LLM window),
   its reply is added to the history, the tools it asked for run and their
   results (``ToolMessage``) are added too, until the model answers in text;
4. after each turn, reads the window with the Fastpaca SDK and prints its size:
   messages, ``used_tokens``, and how many tool outputs the policy cleared,
   beside the size of the whole log (``ctx.preview`` with no policy). The
   ``search`` tool returns a large document (about 500 tokens), so the log
   outgrows the budget by the fifth turn while the window stays well under it.

The message log keeps every tool output in full (``GET …/messages``); only the
window, which is what the model sees, holds the placeholders.

The model is offline by default: :class:`ScriptedToolModel`, a fake chat model
that asks for tools and then answers from the tool results it finds in the
window. With ``OPENAI_API_KEY`` set and ``langchain-openai`` installed it uses
``ChatOpenAI`` (``OPENAI_MODEL``, default ``gpt-4o-mini``) instead, unless you
pass ``--offline``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import operator
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from fastpaca import APIConnectionError, Context, Fastpaca, FastpacaError, Policy
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langchain_fastpaca import FastpacaChatMessageHistory

BUDGET = 3000
POLICY: Policy = {"strategy": "strip_tool_results", "config": {"keep": 2}}
PLACEHOLDER = "[tool output cleared]"  # the policy's default placeholder
MAX_STEPS = 6  # model calls per turn before we give up

SYSTEM_PROMPT = (
    "You are a research assistant. Use `search` for facts about Fastpaca and "
    "`calculator` for arithmetic, then answer in one or two sentences."
)

QUESTIONS = [
    "How long does Fastpaca keep the message log?",
    "What does the strip_tool_results policy do? And what is 4 * 700?",
    "Which tokenizer does the server count tokens with?",
    "Where is the trigger of a 3000 token budget at ratio 0.7, i.e. 3000 * 0.7?",
    "How do I see why a message left the window?",
    "What happens when two writers append at the same time?",
]


# --- the tools -----------------------------------------------------------------

# What the fake knowledge base knows, by keyword: (title, the key fact).
FACTS = [
    (
        "log",
        "Message log",
        "The log keeps every message forever, in order; policies never touch it.",
    ),
    (
        "strip_tool_results",
        "The strip_tool_results policy",
        "Past the trigger it replaces every tool output but the newest `keep` with a "
        "placeholder; the call and its id stay, so the model knows it called the tool.",
    ),
    ("tokenizer", "Tokenizers", "Token counts come from tiktoken's o200k_base unless set."),
    ("trigger", "Triggers", "A policy runs once the window passes trigger_ratio x token_budget."),
    (
        "why",
        "Compaction records",
        "GET /v1/contexts/{id}/compactions says which seqs left the window, and why.",
    ),
    (
        "append",
        "Concurrent writers",
        "Appends are ordered by Raft; pass if_version to fail with 409 on a stale window.",
    ),
]

FILLER = (
    "This section repeats background material from the Fastpaca handbook: contexts, "
    "windows, budgets, policies and the log, with examples, caveats and cross references "
    "to the API reference, so that a search result is as long as a real web page."
)


@tool
def search(query: str) -> str:
    """Search the Fastpaca handbook; returns the best matching document (long)."""
    words = query.lower()
    title, fact = next(
        ((title, fact) for key, title, fact in FACTS if key in words),
        ("Overview", "Fastpaca stores the log and serves a token-budgeted window."),
    )
    sections = [f"Section {n}. {FILLER}" for n in range(1, 9)]
    return "\n\n".join([f"# {title}", f"Summary: {fact}", *sections])


_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))  # type: ignore[no-any-return]
    raise ValueError("only numbers and + - * / ** are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `3000 * 0.7`."""
    try:
        value = _evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as error:
        return f"error: {error}"
    return f"{expression} = {round(value, 6):g}"


TOOLS: list[BaseTool] = [search, calculator]
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


# --- the offline model ---------------------------------------------------------

EXPRESSION = re.compile(r"\d+(?:\.\d+)?(?:\s*[-+*/]\s*\d+(?:\.\d+)?)+")


class ScriptedToolModel(BaseChatModel):
    """An offline tool-calling chat model, in the spirit of langchain-core's fake models.

    langchain-core's ``GenericFakeChatModel`` replays a fixed list of replies; this
    one decides from the messages it is given, like a real model does:

    * after a user message it asks for tools: ``search`` with the question, and
      ``calculator`` when the question holds an arithmetic expression;
    * once the results of those calls are in the window, it answers from them
      (and says how many older tool outputs it sees cleared).
    """

    tool_names: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-calling-fake"

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        names = [t.name if isinstance(t, BaseTool) else str(t["name"]) for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last_user = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        question = str(messages[last_user].content)
        results = [m for m in messages[last_user + 1 :] if isinstance(m, ToolMessage)]
        if not results:
            calls = [self._call("search", {"query": question})]
            expression = EXPRESSION.search(question)
            if expression and "calculator" in self.tool_names:
                calls.append(self._call("calculator", {"expression": expression.group()}))
            return AIMessage(content="", tool_calls=calls)
        answer = []
        for result in results:
            text = str(result.content)
            summary = re.search(r"^Summary: (.*)$", text, re.MULTILINE)
            answer.append(summary.group(1) if summary else text)
        earlier = messages[:last_user]
        cleared = sum(isinstance(m, ToolMessage) and m.content == PLACEHOLDER for m in earlier)
        if cleared:
            answer.append(f"(I see {cleared} earlier tool outputs cleared from my window.)")
        return AIMessage(content=" ".join(answer))

    def _call(self, name: str, args: dict[str, Any]) -> ToolCall:
        return ToolCall(name=name, args=args, id=f"call_{uuid.uuid4().hex[:12]}", type="tool_call")


def make_model(offline: bool) -> tuple[Runnable[LanguageModelInput, BaseMessage], str]:
    """The tool-bound chat model: ChatOpenAI when configured, else the offline fake."""
    if (
        not offline
        and os.environ.get("OPENAI_API_KEY")
        and importlib.util.find_spec("langchain_openai") is not None
    ):
        from langchain_openai import ChatOpenAI  # type: ignore[import-not-found,unused-ignore]

        name = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        return ChatOpenAI(model=name).bind_tools(TOOLS), f"ChatOpenAI({name})"
    return ScriptedToolModel().bind_tools(TOOLS), "ScriptedToolModel (offline)"


# --- the agent loop ------------------------------------------------------------


def short(value: Any, limit: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_turn(
    history: FastpacaChatMessageHistory,
    model: Runnable[LanguageModelInput, BaseMessage],
    question: str,
) -> None:
    """One user turn: model → tool calls → tool results, until the model answers."""
    history.add_user_message(question)
    for _ in range(MAX_STEPS):
        reply = model.invoke(history.messages)  # the window, as LangChain messages
        if not isinstance(reply, AIMessage):
            raise TypeError(f"the model answered with a {type(reply).__name__}")
        history.add_message(reply)
        if not reply.tool_calls:
            print(f"  assistant: {short(reply.content, 300)}")
            return
        results: list[BaseMessage] = []
        for call in reply.tool_calls:
            print(f"  → {call['name']}({short(call['args'], 80)})")
            tool_message = TOOLS_BY_NAME[call["name"]].invoke(call)  # a ToolMessage
            print(f"  ← {call['name']}: {len(str(tool_message.content)):,} characters")
            results.append(tool_message)
        history.add_messages(results)  # one atomic append for the step's results
    raise RuntimeError(f"the model did not answer within {MAX_STEPS} steps")


def window_line(ctx: Context, turn: int) -> str:
    """The window's size after a turn: what the model will see next."""
    window = ctx.context()
    outputs = [
        part
        for message in window.messages
        for part in message["parts"]
        if part.get("type") == "tool_result"
    ]
    cleared = sum(part.get("cleared") is True for part in outputs)
    # The whole log as a window with no policy and no budget to speak of: what the
    # model would be sent if nothing were cleared (nothing is changed by a preview).
    log = ctx.preview(policy={"strategy": "manual", "config": {}}, token_budget=10_000_000)
    return (
        f"[turn {turn}] window: {len(window.messages)} messages, "
        f"{window.used_tokens}/{window.budget_tokens} tokens; "
        f"tool outputs: {len(outputs) - cleared} full, {cleared} cleared; "
        f"log: {len(log.messages)} messages, {log.used_tokens} tokens"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--fastpaca-url",
        default=os.environ.get("FASTPACA_URL", "http://127.0.0.1:4000"),
        help="the Fastpaca server (default: $FASTPACA_URL or http://127.0.0.1:4000)",
    )
    parser.add_argument("--turns", type=int, default=5, help="user turns to run (default 5)")
    parser.add_argument(
        "--context-id", help="the context to use (default: a new langchain-agent-<hex>)"
    )
    parser.add_argument(
        "--offline", action="store_true", help="use the offline fake model even with an API key"
    )
    args = parser.parse_args(argv)
    context_id = args.context_id or f"langchain-agent-{uuid.uuid4().hex[:8]}"

    model, model_name = make_model(args.offline)
    try:
        with Fastpaca(base_url=args.fastpaca_url) as client:
            ctx = client.context(context_id, budget=BUDGET, policy=POLICY)
            print(
                f"Fastpaca at {args.fastpaca_url}, context {context_id}: budget {BUDGET}, "
                f"policy strip_tool_results keep=2; model {model_name}"
            )
            history = FastpacaChatMessageHistory(client=client, context_id=context_id)
            if not history.messages:
                history.add_message(SystemMessage(content=SYSTEM_PROMPT))  # pinned
            for turn in range(1, args.turns + 1):
                question = QUESTIONS[(turn - 1) % len(QUESTIONS)]
                print(f"\nturn {turn} user: {question}")
                run_turn(history, model, question)
                print(window_line(ctx, turn))

            log = list(ctx.iter_history())
            outputs = [p for m in log for p in m["parts"] if p.get("type") == "tool_result"]
            size = sum(len(str(p.get("payload"))) for p in outputs)
            print(
                f"\nThe log still holds all {len(outputs)} tool outputs in full "
                f"({size:,} characters): GET /v1/contexts/{context_id}/messages"
            )
    except APIConnectionError:
        print(f"cannot reach {args.fastpaca_url}; start a server with `make serve`")
        return 1
    except FastpacaError as error:
        print(f"the server refused a request: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
