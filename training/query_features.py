"""Cheap query features beside the sentence embedding: length, code and maths markers.

Fixed transforms of the text (nothing fitted, so nothing can leak from test data and the gateway
computes them in microseconds). Each lies in about [0, 1]:

- ``log_chars``: log(1 + characters) / 10
- ``log_lines``: log(1 + newlines) / 5
- ``digits``: share of characters that are digits (x 5, capped at 1)
- ``code``: share of code markers present (``def``, ``return``, ``import``, braces, ``==``,
  backticks, ``;`` at a line end, ``self.``)
- ``maths``: share of maths markers present (``$``, ``^``, ``\\frac``, ``sqrt``, ``=``, ``+``,
  ``%``, ``x``-like variables next to digits)
- ``options``: lettered answer options ("A)", "(B)", "C.") present, capped at 10, / 10

Usage::

    F = cheap_features(texts)                      # [n, 6] float32
    X2 = with_features(X, texts, scale=0.3)        # [n, D + 6]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FEATURES = ("log_chars", "log_lines", "digits", "code", "maths", "options")
_CODE = (
    re.compile(r"\bdef\s"),
    re.compile(r"\breturn\b"),
    re.compile(r"\bimport\s"),
    re.compile(r"[{}]"),
    re.compile(r"=="),
    re.compile(r"`"),
    re.compile(r";\s*$", re.M),
    re.compile(r"\bself\."),
)
_MATHS = (
    re.compile(r"\$"),
    re.compile(r"\^"),
    re.compile(r"\\frac|\\sqrt|sqrt\("),
    re.compile(r"\d\s*=\s*\d|=\s*\d"),
    re.compile(r"\d\s*[+*/-]\s*\d"),
    re.compile(r"%"),
    re.compile(r"\b\d+[a-z]\b|\b[a-z]\s*[+=]\s*\d"),
)
_OPTION = re.compile(r"(?:^|\s)\(?[A-J][).:]\s", re.M)


def cheap_features(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """[n, len(FEATURES)] features of each text (see the module docstring)."""
    out = np.zeros((len(texts), len(FEATURES)), dtype=np.float32)
    for i, t in enumerate(texts):
        n = max(1, len(t))
        out[i] = (
            math.log1p(len(t)) / 10.0,
            math.log1p(t.count("\n")) / 5.0,
            min(1.0, 5.0 * sum(c.isdigit() for c in t) / n),
            sum(bool(p.search(t)) for p in _CODE) / len(_CODE),
            sum(bool(p.search(t)) for p in _MATHS) / len(_MATHS),
            min(10, len(_OPTION.findall(t))) / 10.0,
        )
    return out


def with_features(X: npt.ArrayLike, texts: Sequence[str], scale: float) -> npt.NDArray[np.float32]:
    """The embeddings with ``scale`` x the cheap features appended ([n, D + 6])."""
    Xa = np.asarray(X, dtype=np.float32)
    if Xa.shape[0] != len(texts):
        raise ValueError(f"{Xa.shape[0]} embeddings for {len(texts)} texts")
    return np.concatenate([Xa, np.float32(scale) * cheap_features(texts)], axis=1)
