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
  report's seeds);
- SmolLM2 (``--llm``, opt-in): SmolLM2-135M-Instruct fine-tuned federatedly on flexmerge's yes/no
  text tasks (``llm_tasks``), ``llm_clients`` clients, each mostly one task at a skewed level
  (``llm_skews``: ``iid`` = every task evenly, p = share of the client's primary task); adapters on
  ``llm_targets`` of the last ``llm_layers`` decoder layers at LoRA rank ``llm_lora_rank``'s
  upload; one learning rate ``llm_lr`` for every method, fixed up front (not tuned).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.research.jobs import comma_list


def _levels(text: str) -> list[float | None]:
    """Heterogeneity levels of a flag: ``iid`` (None) or a number, comma-separated."""
    return [None if a == "iid" else float(a) for a in comma_list(text)]


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
    digits: bool = field(default=True, metadata={"help": "run the digits setting"})
    # SmolLM2
    llm: bool = field(default=False, metadata={"help": "run the SmolLM2 text-task setting"})
    llm_tasks: str = field(
        default="big,animal,color,fruit", metadata={"help": "yes/no text tasks (comma list)"}
    )
    llm_skews: str = field(
        default="iid,0.9",
        metadata={"help": "task skew levels: 'iid' or a client's share of its primary task"},
    )
    llm_clients: int = field(default=4, metadata={"help": "clients on SmolLM2"})
    llm_rounds: int = field(default=8, metadata={"help": "federated rounds on SmolLM2"})
    llm_local_steps: int = field(default=6, metadata={"help": "local Adam steps per round"})
    llm_batch: int = field(default=8, metadata={"help": "questions per local step"})
    llm_per_client: int = field(default=48, metadata={"help": "training questions per client"})
    llm_lr: float = field(default=1e-2, metadata={"help": "Adam learning rate, every method"})
    llm_lora_rank: int = field(default=4, metadata={"help": "LoRA rank on SmolLM2"})
    llm_targets: str = field(
        default="v_proj,o_proj,down_proj",
        metadata={"help": "adapted projections (not q/k: the GGUF loader permutes them)"},
    )
    llm_layers: int = field(default=2, metadata={"help": "adapt the last N decoder layers"})
    llm_eval: int = field(default=32, metadata={"help": "held-out test questions per task"})
    llm_flower_runs: int = field(
        default=1, metadata={"help": "seed 0's SmolLM2 runs repeated on the Flower backend"}
    )
    # Flower
    flower_runs: int = field(
        default=3, metadata={"help": "seed 0's digits runs repeated on the Flower backend"}
    )

    def method_list(self) -> list[str]:
        return comma_list(self.methods)

    def alpha_list(self) -> list[float | None]:
        return _levels(self.alphas)

    def lr_list(self) -> list[float]:
        return [float(x) for x in self.lrs.split(",") if x]

    def llm_task_list(self) -> list[str]:
        return comma_list(self.llm_tasks)

    def llm_target_list(self) -> list[str]:
        return comma_list(self.llm_targets)

    def llm_skew_list(self) -> list[float | None]:
        return _levels(self.llm_skews)

    def __post_init__(self) -> None:
        unknown = set(self.method_list()) - {"lora", "ffa", "ravan"}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: lora, ffa, ravan")
