"""Schemathesis over ``spec/openapi.yaml`` against a real server: no 5xx, nothing undocumented.

Two runs against one server process with an API key (every request carries
it; ``ignored_auth`` checks that one without it, or with a wrong one, gets 401):

- **Every operation on its own**: the coverage phase (boundary values, missing
  and extra fields, wrong types, methods a path does not take) and then
  ``MAX_EXAMPLES`` generated requests per operation, valid and invalid ones.
  ``DELETE`` runs after the others, so the ids the generator likes (``0``,
  ``A`` …) stay writable for them.
- **Stateful**: scenarios that follow the ``links`` declared in the spec
  (create a context → append with ``if_version`` → read the window at that
  version → compact …), each scenario on contexts of its own.

Every response must pass :data:`CHECKS`. Both runs are derandomized and use no
example database, so CI sees the same requests on every run; the number of
requests is bounded by ``MAX_EXAMPLES``, ``SCENARIOS`` and ``STEPS``, and time
by the ``timeout`` marks.

A failure is a disagreement between the server and the spec: the report names
the check and gives a ``curl`` line that reproduces it (for a stateful failure,
every request of the scenario). Fix the spec when it is wrong and the server
when it is; do not drop a check to get green.

This module runs in a pytest process of its own, started by
``tests/server/test_schemathesis.py``; to run it alone::

    .venv/bin/pytest -o addopts= tests/server/_schemathesis_suite.py

Schemathesis patches Hypothesis for the whole process (its pretty-printer
prints nothing, buffers grow 4x), which would blank the falsifying examples of
every other Hypothesis test; the main session runs with ``-p no:schemathesis``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import hypothesis
import pytest
import schemathesis
from hypothesis.stateful import Bundle
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase
from schemathesis.generation.stateful.state_machine import (
    APIStateMachine,
    StepInput,
    StepOutput,
)
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.specs.openapi.stateful import is_root_allowed, transition

from tests.support.server import ServerProcess
from tests.support.spec import SPEC_PATH

API_KEY = "schemathesis-key"
MAX_EXAMPLES = 40  # generated requests per operation, after the coverage phase
SCENARIOS = 60  # stateful scenarios
STEPS = 12  # steps per scenario at most

CHECKS = [
    not_a_server_error,  # no 5xx (a single node answers no documented 503 here either)
    status_code_conformance,  # the status is documented for the operation
    content_type_conformance,  # the media type is the documented one
    response_schema_conformance,  # the body validates against the documented schema
    response_headers_conformance,  # documented headers (Idempotent-Replayed …) match theirs
    negative_data_rejection,  # a request the spec calls invalid gets a 4xx
    ignored_auth,  # a /v1 request without the key gets 401
    unsupported_method,  # a method a path does not take gets 405 …
    allow_header_conformance,  # … whose Allow header lists the documented methods
]

CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"bearerAuth": {"bearer": API_KEY}}},
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # Invalid requests go wrong in their path, query or body: the key is always
            # sent, and `ignored_auth` checks that requests without it (or with a wrong
            # one) are refused.
            "with-security-parameters": False,
        },
        "phases": {
            "stateful": {
                # Only the links the spec declares drive the stateful run, with valid
                # requests: the per-operation tests send the invalid ones.
                "inference": {"algorithms": []},
                "generation": {"mode": "positive"},
            }
        },
        "suppress-health-check": ["all"],
        # Reproductions must show every field: `token_budget`, `budget_tokens` … would be
        # masked as secrets otherwise (the key is a test constant).
        "output": {"sanitization": {"enabled": False}},
    }
)
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)
PUT_CONTEXT = "PUT /v1/contexts/{context_id}"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("schemathesis") / "data", api_key=API_KEY)
    process.start()
    yield process
    process.stop()


# --- every operation on its own -------------------------------------------------


# A live SSE feed does not end by itself: Schemathesis reads what it sends until the
# request timeout (10 s by default), so keep that short there (the replay comes at once).
LIVE_FEEDS = {"/v1/contexts/{context_id}/events"}
LIVE_FEED_TIMEOUT = 0.5


@pytest.mark.timeout(120)
@SCHEMA.exclude(method="DELETE").parametrize()
def test_operation_answers_as_the_spec_says(case: Case, keyed_server: ServerProcess) -> None:
    timeout = {"timeout": LIVE_FEED_TIMEOUT} if case.operation.path in LIVE_FEEDS else {}
    case.call_and_validate(base_url=keyed_server.url, checks=CHECKS, **timeout)


@pytest.mark.timeout(60)
@SCHEMA.include(method="DELETE").parametrize()
def test_delete_answers_as_the_spec_says(case: Case, keyed_server: ServerProcess) -> None:
    case.call_and_validate(base_url=keyed_server.url, checks=CHECKS)


# --- stateful: the links of the spec --------------------------------------------


def _fresh_context_id(case: Case, number: int) -> None:
    """Prefix the generated id with the step's number: no other step used it."""
    generated = unquote(case.path_parameters["context_id"])
    prefix = f"s{number}-"
    case.path_parameters["context_id"] = quote(prefix + generated[: 256 - len(prefix)], safe="")


def _workflow(base_url: str) -> type[APIStateMachine]:
    """The spec's state machine, with creating a context as its only root step.

    Schemathesis starts scenarios with POSTs and parameterless GETs that have
    links: here appends and compactions to random ids, which only answer 404
    (the per-operation tests cover those). Creating a context is a PUT to its
    id, so that root is added here, built the way Schemathesis builds its own,
    and the others are dropped.

    A context id that does not come from a link (the root's, or one a linked
    step draws to explore) gets a prefix no other step has: ids drawn alike
    (``0``) would otherwise meet contexts of earlier scenarios, which makes
    answers depend on history and Hypothesis fail the run as flaky.
    """
    links = SCHEMA.as_state_machine()
    numbers = itertools.count(1)
    create = SCHEMA["/v1/contexts/{context_id}"]["PUT"].as_strategy(
        generation_mode=GenerationMode.POSITIVE, phase=TestPhase.STATEFUL
    )

    class Workflow(links):  # type: ignore[misc, valid-type]
        root_rules = frozenset({"create_context"})
        _root_labels = frozenset({PUT_CONTEXT})
        create_context = transition(
            name="create_context",
            target=Bundle("catch_all"),
            input=create.map(StepInput.initial),
            precondition=is_root_allowed(PUT_CONTEXT),
        )

        def setup(self) -> None:
            self.requests: list[str] = []

        def step(self, input: StepInput) -> StepOutput:
            if (ParameterLocation.PATH, "context_id") not in input.applied_parameters:
                _fresh_context_id(input.case, next(numbers))
            return super().step(input)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": base_url}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            sent = case.as_curl_command(headers=dict(response.request.headers))
            self.requests.append(f"{sent}\n    → {response.status_code} {response.text[:300]}")
            try:
                case.validate_response(
                    response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder
                )
            except FailureGroup as failure:
                # The failing request alone rarely reproduces: show how the scenario got there.
                failure.add_note(
                    "The scenario's requests, oldest first:\n" + "\n".join(self.requests)
                )
                raise

    for name in links.root_rules:
        setattr(Workflow, name, None)  # shadows the rule: Hypothesis skips attributes without one
    return Workflow


@pytest.mark.timeout(120)
def test_linked_operations_answer_as_the_spec_says(keyed_server: ServerProcess) -> None:
    _workflow(keyed_server.url).run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
