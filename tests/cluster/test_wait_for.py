"""The polling helper the cluster and archive tests wait with: a boolean check must
wait for True (it once returned at the first False, so some waits did not wait)."""

from __future__ import annotations

import pytest

from tests.support.cluster import wait_for


def test_a_boolean_check_waits_for_true() -> None:
    answers = iter([False, False, True])
    calls = []

    def check() -> bool:
        calls.append(1)
        return next(answers)

    assert wait_for(check, 5, "the third call") is True
    assert len(calls) == 3


def test_none_means_not_yet_and_other_values_are_returned() -> None:
    answers = iter([None, 0])
    assert wait_for(lambda: next(answers), 5, "a value") == 0


def test_a_check_that_stays_false_times_out() -> None:
    with pytest.raises(TimeoutError, match=r"waited 0\.2s for never"):
        wait_for(lambda: False, 0.2, "never")
