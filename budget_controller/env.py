"""The replay environment: multi-turn problems answered by a solver whose behaviour is recorded.

Sequential budget allocation as in the paper's MDP. At turn ``t`` an allocator sees the state
(``features.TurnState``) and asks for a budget; the controller grants ``min(asked, B - used)`` (as
the gateway does: the conversation's total can never exceed ``B``). The solver then generates
``min(granted, needed)`` tokens, where ``needed`` is its recorded completion length for that
sub-question (``data.py`` explains the construction and its limits); the turn fails if it was cut
off (``needed > granted``) or the recorded answer is wrong. Two scores: per-turn accuracy (the
fraction of turns answered correctly: a later turn is still worth answering after an earlier one
failed, as in a conversation with a person) and whole-problem accuracy (every turn succeeds). Episodes run in lock-step over a whole batch (numpy), so GRPO's thousands of rollouts
per step cost milliseconds.

Usage::

    env = ReplayEnv(data, spec)
    out = env.rollout(problems, allocator)    # allocator(state, t) -> asked tokens [N]
    out.solved.mean(), out.tokens.mean()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from budget_controller.data import Problems, SolverData
from budget_controller.features import FeatureSpec, TurnState

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Allocator = Callable[[TurnState, int], FloatArray]


@dataclass
class Rollout:
    """What happened in a batch of episodes."""

    solved: FloatArray  # [N] 1 if every turn finished and was correct
    turn_correct: BoolArray  # [N, T] the turn finished and its answer was correct
    tokens: FloatArray  # [N] tokens generated over the conversation
    asked: FloatArray  # [N, T] budgets the allocator asked for (0 past the last turn)
    granted: FloatArray  # [N, T] budgets after clamping to what was left
    used: FloatArray  # [N, T] tokens generated per turn
    active: BoolArray  # [N, T] which (episode, turn) pairs exist
    budget: FloatArray  # [N] the global budget B

    @property
    def turn_accuracy(self) -> FloatArray:
        """[N] fraction of each conversation's turns answered correctly (per-turn accuracy)."""
        n = np.maximum(self.active.sum(axis=1), 1)
        return (self.turn_correct.sum(axis=1) / n).astype(np.float32)


class ReplayEnv:
    def __init__(self, data: SolverData, spec: FeatureSpec) -> None:
        self.data = data
        self.spec = spec
        log_len, p = spec.predictor.predict(data.embeddings)
        self.pred_tokens = np.exp(log_len).astype(np.float32)  # [Q]
        self.pred_correct = p  # [Q]

    def state(
        self,
        p: Problems,
        t: int,
        *,
        used: FloatArray,
        any_trunc: FloatArray,
        last_trunc: FloatArray,
    ) -> TurnState:
        """The state of every episode at turn ``t`` (turns past an episode's end are padding)."""
        E = self.data.embeddings
        n, T = p.questions.shape
        q = p.questions[:, t]
        safe = np.where(q >= 0, q, 0)
        current = E[safe] * (q >= 0)[:, None]
        past = p.questions[:, :t]
        past_mask = (past >= 0).astype(np.float32)  # [N, t]
        past_count = past_mask.sum(axis=1)
        if t:
            past_sum = (E[np.where(past >= 0, past, 0)] * past_mask[..., None]).sum(axis=1)
        else:
            past_sum = np.zeros_like(current)
        fut = p.questions[:, t + 1 :]
        fut_mask = (fut >= 0).astype(np.float32)  # [N, T - t - 1]
        fut_count = fut_mask.sum(axis=1)
        fut_safe = np.where(fut >= 0, fut, 0)
        if fut.shape[1]:
            fut_sum = (E[fut_safe] * fut_mask[..., None]).sum(axis=1)
            fut_tokens = (self.pred_tokens[fut_safe] * fut_mask).sum(axis=1)
            fut_corr = (self.pred_correct[fut_safe] * fut_mask).sum(axis=1)
        else:
            fut_sum = np.zeros_like(current)
            fut_tokens = np.zeros(n, dtype=np.float32)
            fut_corr = np.zeros(n, dtype=np.float32)
        past_pred = (self.pred_tokens[np.where(past >= 0, past, 0)] * past_mask).sum(axis=1)
        return TurnState(
            current=current.astype(np.float32),
            past_mean=(past_sum / np.maximum(past_count, 1.0)[:, None]).astype(np.float32),
            turn=np.full(n, float(t), dtype=np.float32),
            used=used.astype(np.float32),
            budget=p.budget.astype(np.float32),
            any_truncated=any_trunc.astype(np.float32),
            last_truncated=last_trunc.astype(np.float32),
            past_pred_tokens=past_pred.astype(np.float32),
            future_mean=(fut_sum / np.maximum(fut_count, 1.0)[:, None]).astype(np.float32),
            future_count=fut_count.astype(np.float32),
            future_pred_tokens=fut_tokens.astype(np.float32),
            future_pred_correct=(fut_corr / np.maximum(fut_count, 1.0)).astype(np.float32),
        )

    def needed(self, p: Problems) -> tuple[FloatArray, FloatArray]:
        """(needed length, recorded score), each [N, T]; zeros on padding."""
        safe = np.where(p.questions >= 0, p.questions, 0)
        mask = p.questions >= 0
        n = self.data.lengths[safe, p.solver[:, None]] * mask
        c = self.data.correct[safe, p.solver[:, None]] * mask
        return n.astype(np.float32), c.astype(np.float32)

    def rollout(self, p: Problems, allocate: Allocator) -> Rollout:
        n_ep, T = p.questions.shape
        need, corr = self.needed(p)
        active = p.questions >= 0
        used_total = np.zeros(n_ep, dtype=np.float32)
        any_trunc = np.zeros(n_ep, dtype=np.float32)
        last_trunc = np.zeros(n_ep, dtype=np.float32)
        ok = np.ones(n_ep, dtype=bool)
        turn_ok = np.zeros((n_ep, T), dtype=bool)
        asked = np.zeros((n_ep, T), dtype=np.float32)
        granted = np.zeros((n_ep, T), dtype=np.float32)
        used = np.zeros((n_ep, T), dtype=np.float32)
        for t in range(T):
            s = self.state(p, t, used=used_total, any_trunc=any_trunc, last_trunc=last_trunc)
            a = np.maximum(np.asarray(allocate(s, t), dtype=np.float32), 0.0)
            a = np.where(active[:, t], a, 0.0)
            left = np.maximum(p.budget - used_total, 0.0)
            g = np.floor(np.minimum(a, left))
            u = np.minimum(g, need[:, t])
            cut = active[:, t] & (need[:, t] > g)
            turn_ok[:, t] = active[:, t] & ~cut & (corr[:, t] > 0.5)
            ok &= ~active[:, t] | turn_ok[:, t]
            asked[:, t], granted[:, t], used[:, t] = a, g, u
            used_total = used_total + u
            any_trunc = np.maximum(any_trunc, cut.astype(np.float32))
            last_trunc = np.where(active[:, t], cut.astype(np.float32), last_trunc)
        return Rollout(
            solved=ok.astype(np.float32),
            turn_correct=turn_ok,
            tokens=used_total,
            asked=asked,
            granted=granted,
            used=used,
            active=active,
            budget=p.budget.astype(np.float32),
        )
