"""Knobs of the ``avg-reward-q`` job (NOTES.md (h)).

Grouped by concern:
- problems: the random weakly communicating MDP and RiverSwim;
- schedule (ours; the paper gives rates, not constants): stage k uses discount
  gamma_k = 1 - (1 - gamma_1) 2^-(k-1), runs ``stage_base * (1-gamma_k)^-stage_power`` synchronous
  steps (every (s, a) sampled once per step, a generative model) with the rescaled linear step
  size eta_t = 1 / (1 + (1 - gamma_k) t), and (federated) averages the agents' Q-tables
  ``ceil(sync_base / (1 - gamma_k))`` times per stage at evenly spaced points: the number of
  rounds depends on the stages only, never on the sample budget, so the interval between
  averages grows with the budget and across stages;
- experiment: the agent counts, the epsilons, the fixed discounts of the ablation, and the budget
  search: a run's budget is a multiplier on every stage length; the samples an (M, MDP) pair
  needs are those of the smallest multiplier on a sqrt(2) grid whose final greedy policy is
  epsilon-optimal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AvgRewardQConfig:
    # problems
    states: int = field(default=20, metadata={"help": "states of the random MDP"})
    actions: int = field(default=4, metadata={"help": "actions of the random MDP"})
    transient: int = field(default=5, metadata={"help": "transient states of the random MDP"})
    support: int = field(default=3, metadata={"help": "next states per (s, a) in the random MDP"})
    mdp_seed: int = field(default=1, metadata={"help": "seed of the random MDP instance"})
    river_states: int = field(default=16, metadata={"help": "states of RiverSwim (claims 1, 3)"})
    river_left: float = field(
        default=0.05,
        metadata={"help": "RiverSwim's left-bank reward (0.005 classic; 0.05 needs gamma >= 0.94)"},
    )
    river_chains: str = field(
        default="4,6,8,11,16", metadata={"help": "RiverSwim lengths of the rounds-vs-span claim"}
    )
    # schedule
    gamma1: float = field(default=0.5, metadata={"help": "discount of the first stage"})
    stages: int = field(default=6, metadata={"help": "stages (1 - gamma halves per stage)"})
    max_stages: int = field(default=8, metadata={"help": "most stages tried for the span claim"})
    stage_base: float = field(
        default=4.0,
        metadata={"help": "stage length = stage_base / (1 - gamma_k)^stage_power steps"},
    )
    stage_power: float = field(default=1.5, metadata={"help": "see stage_base"})
    sync_base: float = field(
        default=0.5,
        metadata={"help": "averaging rounds per stage = ceil(sync_base / (1 - gamma_k))"},
    )
    lr_continue: bool = field(
        default=False,
        metadata={"help": "continue the step-size clock across stages instead of restarting it"},
    )
    reward_noise: bool = field(
        default=True, metadata={"help": "Bernoulli(r(s, a)) rewards instead of r(s, a)"}
    )
    # experiment
    agents: str = field(default="1,2,4,8,16", metadata={"help": "agent counts M of the sweep"})
    eps_random: float = field(
        default=0.001, metadata={"help": "target gap J* - J^pi on the random MDP"}
    )
    eps_river: float = field(
        default=0.01, metadata={"help": "target gap on RiverSwim (its gaps are 0 or ~0.38)"}
    )
    span_agents: int = field(default=4, metadata={"help": "agents M of the rounds-vs-span claim"})
    budget_min: float = field(
        default=2.0**-12, metadata={"help": "smallest stage-length multiplier of the budget search"}
    )
    budget_max: float = field(
        default=16.0,
        metadata={"help": "largest multiplier (a run never epsilon-optimal by then is censored)"},
    )
    fixed_gammas: str = field(
        default="0.9,0.99,final",
        metadata={"help": "fixed discounts of the ablation ('final' = the schedule's last gamma)"},
    )
    flower_agents: int = field(
        default=4, metadata={"help": "agents of the run repeated on Flower (0: skip Flower)"}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma1 < 1.0:
            raise ValueError("gamma1 must be in (0, 1)")
        if self.stages < 1 or self.stage_base <= 0 or self.sync_base <= 0:
            raise ValueError("stages, stage_base and sync_base must be positive")

    def agent_counts(self) -> list[int]:
        return [int(x) for x in self.agents.split(",")]

    def chain_list(self) -> list[int]:
        return [int(x) for x in self.river_chains.split(",")]

    def fixed_gamma_list(self) -> list[str]:
        return [x.strip() for x in self.fixed_gammas.split(",")]
