"""How the live environment reads an answer letter from a free-form reply."""

from __future__ import annotations

from budget_controller.live import extract_answer


def test_extract_answer_prefers_the_stated_answer() -> None:
    assert extract_answer("A plant needs light. The answer is (C).") == "C"
    assert extract_answer("I think (B) is right, not A") == "A"
    assert extract_answer("Between (A) and (B): the answer is: D") == "D"
    assert extract_answer("no idea") is None
