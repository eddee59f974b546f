"""The promotion gate."""

from __future__ import annotations

import pytest

from recsys_lib.models.tracking import baseline_decision, promotion_decision

pytestmark = pytest.mark.unit


def test_first_model_is_promoted():
    ok, reason = promotion_decision("recall@50", 0.1, None, 0.01)
    assert ok and "no champion" in reason


@pytest.mark.parametrize(("candidate", "champion", "margin", "expected"), [
    (0.30, 0.20, 0.05, True),    # beats by 0.10 > margin
    (0.24, 0.20, 0.05, False),   # beats by 0.04, within margin
    (0.25, 0.20, 0.05, False),   # exactly the margin is not enough
    (0.20, 0.20, 0.0, False),    # a tie never promotes
    (0.19, 0.20, 0.0, False),
])
def test_candidate_must_beat_champion_by_more_than_margin(candidate, champion, margin, expected):
    ok, reason = promotion_decision("recall@50", candidate, champion, margin)
    assert ok is expected
    assert ("beats" in reason) if expected else ("does not beat" in reason)


def test_the_baseline_gate_names_the_strongest_baseline():
    baselines = {"popularity": 0.55, "ease": 0.635, "item_knn": 0.63}
    ok, reason = baseline_decision("recall@50", 0.625, baselines)
    assert not ok and "strongest baseline, ease (0.6350)" in reason and "0.6250" in reason
    ok, reason = baseline_decision("recall@50", 0.635, baselines)  # a tie does not pass
    assert not ok
    ok, reason = baseline_decision("recall@50", 0.64, baselines)
    assert ok and "beats the strongest baseline, ease" in reason
