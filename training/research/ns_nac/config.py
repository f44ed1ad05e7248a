"""Knobs of the ``ns-nac`` job (NOTES.md (i)).

Grouped by concern:
- environment: random ergodic MDPs (S states, A actions, every transition row dense) that change
  either by piecewise-constant switches to a fresh random MDP or by smooth drift between two
  MDPs; the number of switches (drift cycles) grows as ``changes_base * (T / 1e4)^changes_power``
  so the variation budget Delta_T grows sublinearly;
- algorithm: tabular natural actor-critic (softmax actor, TD(0) critic on Q and the average
  reward), constant step sizes alpha (actor) and beta (critic) as adapting factors, restarts every
  H steps; the configuration grid is H in {T / d for d in ``restart_divisors``} x alpha x beta;
  NAC without restarts uses the same (alpha, beta) grid with H = infinity;
- BORL-NS-NAC: EXP3 over the finite-H grid, one arm per epoch of ``epoch_coeff * sqrt(T)`` steps
  (the bandit reward is the epoch's mean reward), exploration rate from the standard EXP3 bound;
- experiment: horizons, tuning seeds (the grid is tuned on seeds 1000+, never on the reported ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NSNACConfig:
    # environment
    states: int = field(default=5, metadata={"help": "states of the random MDPs"})
    actions: int = field(default=3, metadata={"help": "actions of the random MDPs"})
    changes_base: float = field(
        default=2.0, metadata={"help": "switches (drift cycles) at T = 1e4"}
    )
    changes_power: float = field(
        default=0.25, metadata={"help": "switches grow as (T / 1e4)^changes_power"}
    )
    # algorithm grid
    restart_divisors: str = field(default="64,16,4", metadata={"help": "restart periods H = T / d"})
    alphas: str = field(default="0.05,0.3", metadata={"help": "actor step sizes"})
    betas: str = field(default="0.02,0.1", metadata={"help": "critic step sizes"})
    epoch_coeff: float = field(
        default=1.0, metadata={"help": "BORL epoch length = epoch_coeff * sqrt(T) steps"}
    )
    # experiment
    horizons: str = field(default="10000,30000,100000", metadata={"help": "horizons T"})
    tune_seeds: int = field(
        default=2, metadata={"help": "seeds (1000+) on which the grid is tuned"}
    )

    @staticmethod
    def _list(text: str, typ: type) -> list:  # type: ignore[type-arg]
        return [typ(x) for x in text.split(",")]

    def horizon_list(self) -> list[int]:
        return self._list(self.horizons, int)

    def grid(self, horizon: int, *, restarts: bool) -> list[tuple[float, float, float]]:
        """(H, alpha, beta) configurations; H = inf without restarts."""
        hs = [max(1.0, horizon / d) for d in self._list(self.restart_divisors, float)]
        if not restarts:
            hs = [float("inf")]
        return [
            (h, a, b)
            for h in hs
            for a in self._list(self.alphas, float)
            for b in self._list(self.betas, float)
        ]

    def changes(self, horizon: int) -> int:
        return max(1, round(self.changes_base * (horizon / 1e4) ** self.changes_power))
