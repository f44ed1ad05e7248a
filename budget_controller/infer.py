"""The runtime budget controller the gateway calls: one conversation turn in, ``max_tokens`` out.

It rebuilds the policy's state from what the gateway knows about a conversation: the embedding
of this turn's user message, the mean embedding of the earlier user turns, the conversation's
ledger (tokens spent and held by turns in flight, settled turns, whether a turn was cut off by its
``max_tokens``) and its global budget. The policy is TAB (not All-SubQ: a live conversation's
future turns are unknown) and acts greedily over the very action set it was trained and
evaluated with (every level at least the predicted length: no turn is skipped). The default checkpoint ships in
``budget_controller/artifacts/tab.pt``.

Usage::

    ctl = BudgetController.load()            # the shipped policy
    ctl.choose(embedding=e, past=[...], turn=1, used=120, total=2000,
               any_truncated=False, last_truncated=False)   # -> e.g. 166
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from budget_controller.features import FeatureSpec, TurnState, encode
from budget_controller.model import BudgetPolicy

DEFAULT_CHECKPOINT = Path(__file__).parent / "artifacts" / "tab.pt"


class BudgetController:
    """A loaded policy plus its feature spec; ``choose`` is cheap (one tiny MLP forward)."""

    def __init__(self, policy: BudgetPolicy, spec: FeatureSpec) -> None:
        self.policy = policy.eval()
        self.spec = spec
        self._lock = threading.Lock()
        if min(spec.levels) < 1:
            raise ValueError(
                "this checkpoint can skip turns (a level below the predicted length); the "
                "gateway serves only policies whose every action is a real attempt"
            )

    @classmethod
    def load(cls, path: Path | str | None = None) -> BudgetController:
        policy, spec, _ = BudgetPolicy.from_checkpoint(path or DEFAULT_CHECKPOINT)
        return cls(policy, spec)

    def choose(
        self,
        *,
        embedding: npt.NDArray[np.float32],
        past: Sequence[npt.NDArray[np.float32]] = (),
        turn: int,
        used: int,
        total: int,
        any_truncated: bool,
        last_truncated: bool,
    ) -> int:
        """This turn's budget in tokens (not yet clamped to what is left)."""
        cur = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        if len(past):
            P = np.stack([np.asarray(p, dtype=np.float32) for p in past])
            past_mean = P.mean(axis=0).reshape(1, -1)
            past_pred = float(np.exp(self.spec.predictor.predict(P)[0]).sum())
        else:
            past_mean = np.zeros((1, cur.shape[1]), dtype=np.float32)
            past_pred = 0.0
        state = TurnState(
            current=cur,
            past_mean=past_mean.astype(np.float32),
            turn=np.array([turn], dtype=np.float32),
            used=np.array([used], dtype=np.float32),
            budget=np.array([total], dtype=np.float32),
            any_truncated=np.array([float(any_truncated)], dtype=np.float32),
            last_truncated=np.array([float(last_truncated)], dtype=np.float32),
            past_pred_tokens=np.array([past_pred], dtype=np.float32),
        )
        emb, scal = encode(self.spec, state, all_subq=self.policy.cfg.all_subq)
        with self._lock, torch.no_grad():
            logits = self.policy(torch.from_numpy(emb), torch.from_numpy(scal))
        action = logits.argmax(dim=1).numpy()
        return int(self.spec.tokens(action, cur)[0])
