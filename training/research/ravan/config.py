"""Knobs of the ``ravan`` job (NOTES.md (e)).

Grouped by concern:
- methods at equal upload per adapted layer: LoRA FedAvg (PEFT LoRA, rank ``lora_rank``; A and
  B averaged separately, the inexact mean(B) mean(A)), FFA-LoRA (PEFT LoRA with A frozen at its
  shared random init, only B trained and sent; its rank is the largest whose B fits LoRA's
  upload), Ravan (``heads`` heads, each rank the largest with heads * r^2 <= LoRA's upload,
  capped by the layer's dimensions; uploads s_i H_i);
- federation: ``clients`` clients, Dirichlet(alpha) label skew at each level of ``alphas``
  (``iid`` for a uniform split), ``rounds`` rounds of ``local_steps`` full-batch Adam steps,
  every client every round, FedAvg weighted by sample count;
- digits: a 64-128-128-10 MLP pre-trained on digits 0-4 (its own share of sklearn's digits), then
  adapted federatedly to all ten digits; the learning rate of each method and level is picked on
  a validation split from ``lrs`` (Dirichlet ``tune_alpha``, seed ``tune_seed``, outside the
  report's seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RavanConfig:
    # methods
    lora_rank: int = field(default=4, metadata={"help": "LoRA rank r (sets every method's upload)"})
    heads: int = field(default=4, metadata={"help": "Ravan heads h"})
    methods: str = field(default="lora,ffa,ravan", metadata={"help": "methods to compare"})
    # federation (digits)
    clients: int = field(default=20, metadata={"help": "clients on digits"})
    alphas: str = field(
        default="iid,1.0,0.1", metadata={"help": "Dirichlet label-skew levels ('iid' = uniform)"}
    )
    rounds: int = field(default=30, metadata={"help": "federated rounds on digits"})
    local_steps: int = field(default=10, metadata={"help": "local full-batch Adam steps"})
    lrs: str = field(default="0.003,0.01,0.03", metadata={"help": "learning-rate grid"})
    tune_alpha: str = field(default="1.0", metadata={"help": "label skew of the tuning runs"})
    tune_seed: int = field(default=100, metadata={"help": "seed of the validation tuning runs"})
    pretrain_epochs: int = field(default=150, metadata={"help": "pre-training epochs (digits 0-4)"})
    # Flower
    flower_runs: int = field(
        default=3, metadata={"help": "seed 0's digits runs repeated on the Flower backend"}
    )

    def method_list(self) -> list[str]:
        return [m for m in self.methods.split(",") if m]

    def alpha_list(self) -> list[float | None]:
        return [None if a == "iid" else float(a) for a in self.alphas.split(",") if a]

    def lr_list(self) -> list[float]:
        return [float(x) for x in self.lrs.split(",") if x]

    def __post_init__(self) -> None:
        unknown = set(self.method_list()) - {"lora", "ffa", "ravan"}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: lora, ffa, ravan")
