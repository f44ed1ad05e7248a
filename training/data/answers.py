"""Read the option a model chose from its free-text reply to a multiple-choice question.

Replies from small chat models are rarely a bare letter: "The answer is (C).", "Answer: C",
"C. 42", "I think it is B", "A: The mitochondria". Taking the first capital letter reads the
article "A" and the pronoun "I" as answers, so this reads, in order of how explicit they are:

1. a stated answer: "answer is (X)", "answer: X", "correct option is X", "option X" (the last one
   stated wins, as models often restate their final choice);
2. a reply that starts with an option label: "C", "(C)", "C.", "C)", "C:", "C -";
3. the last parenthesised letter "(X)";
4. a lone letter closing the reply ("... so it is B.");
5. with the options given: a reply that starts with exactly one option's text.

A reply that repeats the option list ("A. 784°F\nB. 800°F ...", common from small models) states
no answer unless it says one explicitly (rule 1).

A letter outside the question's options is never an answer. When none of these applies the reply
states no answer (``None``, scored wrong).

Usage::

    extract_choice("The answer is (C).", n_options=10)          # "C"
    extract_choice("A big fish eats a small one.", n_options=10)  # None
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOP"

_L = r"([A-P])(?![A-Za-z0-9'])"  # one upper-case option letter, not the start of a word
# The cue is case-insensitive, the letter is not: "the answer is a bit unclear" states nothing.
_STATED = re.compile(
    r"(?i:answer|option|choice)\s*(?i:is|would be|will be|=|:)?\s*(?i:option|choice)?\s*[:\-]?\s*"
    r"[\(\[\*]*" + _L
)
# Words that may follow a stated "A" or "I" ("A because ...", "I is correct"); any other
# lower-case word after it makes it the article or the pronoun ("A big fish", "I think").
_CONNECTORS = {"because", "since", "as", "which", "is", "was", "and", "or", "for", "so", "with"}
_LEADING = re.compile(r"^\W{0,3}[\(\[\*]*" + r"([A-P])" + r"(?:\s*$|\s*[\)\]\.:,\-\*]|\s+-)")
_LISTED = re.compile(r"^\s*\(?([A-P])[\.\)]\s", re.MULTILINE)
_PAREN = re.compile(r"\(([A-P])\)")
_CLOSING = re.compile(r"(?:^|\s)\(?" + r"([A-P])" + r"\)?[\s\.\!\*\)]*$")


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower().rstrip(".")


def extract_choice(
    reply: str, *, n_options: int | None = None, options: Sequence[str] | None = None
) -> str | None:
    """The option letter the reply states, or None when it states none."""
    n = len(options) if options is not None else (n_options or len(LETTERS))
    valid = set(LETTERS[: max(1, min(n, len(LETTERS)))])
    text = reply.strip()
    if not text:
        return None

    def ok(letter: str | None) -> str | None:
        return letter if letter is not None and letter in valid else None

    stated = [
        m.group(1)
        for m in _STATED.finditer(text)
        if m.group(1) in valid and not _is_word(text, m.group(1), m.end(1))
    ]
    if stated:
        return stated[-1]
    if len(set(_LISTED.findall(text))) >= 2:
        return None  # the reply repeats the option list ("A. ...\nB. ..."): it picks none of them
    m = _LEADING.match(text)
    if m and ok(m.group(1)):
        return m.group(1)
    paren = [p for p in _PAREN.findall(text) if p in valid]
    if paren:
        return paren[-1]
    m = _CLOSING.search(text)
    # A closing "A" or "I" after prose counts only as a label ("it is A.", "(I)"), not "... than I."
    hedged = m is not None and re.search(r"\b(?:and|or)\s*\(?[A-P]\)?[\s\.\!\*\)]*$", text)
    if m and ok(m.group(1)) and not hedged:
        single = len(text.split()) == 1
        if m.group(1) not in "AI" or single or _ends_as_label(text):
            return m.group(1)
    if options is not None:
        t = _norm(text)
        hits = [LETTERS[i] for i, o in enumerate(options) if _norm(o) and t.startswith(_norm(o))]
        if len(hits) == 1:
            return hits[0]
    return None


def _ends_as_label(text: str) -> bool:
    """True when the closing A or I is a label ("it is A.", "option (I)") rather than a word."""
    return bool(re.search(r"(?:\bis|\bbe|:|\()\s*\(?[AI]\)?[\s\.\!\)]*$", text))


def _is_word(text: str, letter: str, end: int) -> bool:
    """True when an "A" or "I" at ``text[end - 1]`` is the article or the pronoun."""
    if letter not in "AI":
        return False
    nxt = re.match(r"\s+([a-z]+)", text[end:])
    return nxt is not None and nxt.group(1) not in _CONNECTORS
