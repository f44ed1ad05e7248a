"""The conversation state the policy sees, as arrays: one function for training, eval and serving.

State at turn ``t`` (paper section 3): the history and the current sub-question; All-SubQ adds the
remaining sub-questions. Here the history is the mean embedding of the past sub-questions plus
what the gateway can observe about past turns (tokens used, whether a turn was cut off by its
``max_tokens``, and how long past answers ran against their predicted lengths: how verbose this
conversation's model is); correctness is never observed. Token quantities are scaled by the global budget
``B`` and by the budget unit (the solver pool's median length), so one policy serves every ``B``.

Usage::

    emb, scal = encode(spec, state, all_subq=False)   # [N, 3, D], [N, NUM_SCALARS]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from budget_controller.length import LengthPredictor

FloatArray = npt.NDArray[np.float32]
NUM_SCALARS = 18


@dataclass(frozen=True)
class FeatureSpec:
    """What turns raw state into features; saved inside every policy checkpoint."""

    unit: float  # the budget unit: median completion length of the solver pool (tokens)
    levels: list[float]  # the action set: multiples (>= 1) of the predicted length
    predictor: LengthPredictor

    def tokens(self, actions: npt.NDArray[np.int64], current: FloatArray) -> FloatArray:
        """Budgets in tokens for action indices [N] on sub-questions with embeddings [N, D].

        An action asks for ``level * predicted length`` (at least 1 token): the policy picks a
        safety margin over the length predicted from the query. Every level is at least 1: no
        turn is given up (the same action set in training, evaluation and the gateway)."""
        pred = np.exp(self.predictor.predict(current)[0])
        mult = np.asarray(self.levels, dtype=np.float32)[actions]
        return np.maximum(np.round(mult * pred), 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "levels": self.levels, "predictor": self.predictor.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(
            unit=float(d["unit"]),
            levels=[float(x) for x in d["levels"]],
            predictor=LengthPredictor.from_dict(d["predictor"]),
        )


@dataclass
class TurnState:
    """A batch of conversations at their current turn (all arrays have leading size N)."""

    current: FloatArray  # [N, D] embedding of this turn's sub-question
    past_mean: FloatArray  # [N, D] mean embedding of past sub-questions (zeros at turn 0)
    turn: FloatArray  # [N] 0-based turn index
    used: FloatArray  # [N] tokens generated so far
    budget: FloatArray  # [N] the conversation's global budget B
    any_truncated: FloatArray  # [N] 1 if a past turn hit its max_tokens
    last_truncated: FloatArray  # [N] 1 if the previous turn did
    past_pred_tokens: FloatArray | None = None  # [N] sum of the past turns' predicted lengths
    # All-SubQ only (zeros otherwise): the remaining sub-questions after this one
    future_mean: FloatArray | None = None  # [N, D]
    future_count: FloatArray | None = None  # [N]
    future_pred_tokens: FloatArray | None = None  # [N] sum of predicted lengths
    future_pred_correct: FloatArray | None = None  # [N] mean predicted score


def encode(spec: FeatureSpec, s: TurnState, *, all_subq: bool) -> tuple[FloatArray, FloatArray]:
    """(embeddings [N, 3, D] = current, past, future; scalars [N, NUM_SCALARS])."""
    n = len(s.turn)
    B = np.maximum(s.budget, 1.0)
    left = np.maximum(B - s.used, 0.0)
    log_len, p_cur = spec.predictor.predict(s.current)
    z_cur = (log_len - spec.predictor.log_len_mean) / spec.predictor.log_len_std
    pred_cur = np.exp(log_len)
    cols = [
        np.minimum(s.turn, 8) / 4.0,
        (s.turn > 0).astype(np.float32),
        s.used / B,
        left / B,
        np.log(B / spec.unit) / 3.0,
        np.log1p(left / spec.unit) / 2.0,
        s.any_truncated,
        s.last_truncated,
        z_cur,
        p_cur,
        np.minimum(pred_cur / np.maximum(left, 1.0), 4.0) / 4.0,
    ]
    # How long this conversation's answers ran against their predictions (the model is unseen:
    # a verbose one needs larger grants later on), and the static share this turn would get.
    past_pred = s.past_pred_tokens if s.past_pred_tokens is not None else np.zeros(n)
    seen = (s.turn > 0) & (past_pred > 0)
    verbosity = np.where(seen, np.log((s.used + 1.0) / (past_pred + 1.0)), 0.0)
    cols += [np.clip(verbosity, -3.0, 3.0) / 2.0, seen.astype(np.float32)]
    future = np.zeros_like(s.current)
    if all_subq:
        assert s.future_mean is not None and s.future_count is not None
        assert s.future_pred_tokens is not None and s.future_pred_correct is not None
        future = s.future_mean
        total_pred = pred_cur + s.future_pred_tokens
        cols += [
            s.future_count / 4.0,
            np.minimum(s.future_pred_tokens / np.maximum(left, 1.0), 4.0) / 4.0,
            np.minimum(pred_cur / np.maximum(total_pred, 1.0), 1.0),
            s.future_pred_correct,
            (s.future_count == 0).astype(np.float32),
        ]
    else:
        cols += [np.zeros(n, dtype=np.float32)] * 5
    scal = np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=1)
    emb = np.stack([s.current, s.past_mean, future], axis=1).astype(np.float32)
    assert scal.shape == (n, NUM_SCALARS)
    return emb, scal
