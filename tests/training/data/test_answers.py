"""Reading the stated option from a model's reply: never the article "A" or the pronoun "I"."""

from __future__ import annotations

import pytest

from service.cli.live_eval import options_in, score_reply
from training.data.answers import extract_choice

TEN = 10


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("The answer is (C).", "C"),
        ("the answer is C", "C"),
        ("Answer: C", "C"),
        ("answer: (J)", "J"),
        ("The correct option is B.", "B"),
        ("Option D", "D"),
        ("C", "C"),
        ("(C)", "C"),
        ("C.", "C"),
        ("C) 42", "C"),
        ("C. 42", "C"),
        ("**B**", "B"),
        ("\nB) momentum", "B"),
        ("A", "A"),
        ("A.", "A"),
        ("A: The mitochondria", "A"),
        ("I.", "I"),
        ("I", "I"),
        ("(I) Energy", "I"),
        ("It is I.", "I"),
        ("The answer is A.", "A"),
        ("Answer: A because it is", "A"),
        ("The answer is I", "I"),
        ("I think it is B", "B"),
        ("I believe the answer is D.", "D"),
        ("answer: I think it is B", "B"),
        ("A is wrong, so the answer is (E)", "E"),
        ("The answer is (B). Wait, the answer is (F).", "F"),
        ("A. 3\nB. 4\nThe answer is B", "B"),
    ],
)
def test_stated_answers_are_read(reply: str, letter: str) -> None:
    assert extract_choice(reply, n_options=TEN) == letter


@pytest.mark.parametrize(
    "reply",
    [
        "A big fish swallows a small one.",  # the article
        "I am not sure.",  # the pronoun
        "I think so",
        "A",  # fine on its own ...
        "the answer is a bit unclear",  # a lower-case "a" is a word
        "The answer is K",  # not one of ten options
        "between A and B",  # hedged
        "",
        "Momentum is conserved",
        "A. 784°F\nB. 800°F\nC. 850°F",  # the option list repeated
        "A. The first mammals\nB. The first birds",
    ],
)
def test_prose_states_no_answer(reply: str) -> None:
    if reply == "A":  # ... so the one positive case here checks the list above is not vacuous
        assert extract_choice(reply, n_options=TEN) == "A"
        return
    assert extract_choice(reply, n_options=TEN) is None


def test_option_text_and_option_count() -> None:
    options = ["direction", "momentum", "size", "speed"]
    assert extract_choice("Momentum.", options=options) == "B"
    assert extract_choice("Momentum.", n_options=4) is None
    assert extract_choice("E", options=options) is None  # only A-D exist
    q = "Which?\n\nA. x\nB. y\nC. z"
    assert options_in(q) == 3
    assert score_reply("The answer is (B).", q, "B") == 1.0
    assert score_reply("A big question. B", q, "A") == 0.0  # the first capital is not the answer
    assert score_reply("I don't know", q, "I") == 0.0
