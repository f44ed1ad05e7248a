"""Knobs of LOCUS (model embeddings from evaluation sets) and their validation.

Grouped by concern; defaults follow the paper's released code (LOCUS, arXiv
2601.21082: github.com/patel-shivam/locus_code_release) unless noted.

- **Architecture**: ``d_model`` = 128, ``num_latents`` r = 64, ``num_heads`` = 4, ``num_isab`` = 2
  ISAB blocks, predictor widths ``3 * d_model -> predictor_hidden (64) -> 1``, ``dropout`` 0.1.
- **Regularisation**: Gaussian noise on the query encodings (encoder and decoder side), its std
  annealed 0.10 -> 0.05 by a cosine over the first ``noise_anneal_frac`` of training.
- **Optimisation**: AdamW, encoder lr 2e-4 and decoder lr 8e-4, weight decay 5e-2 on both.
- **Episodes**: each step draws ``models_per_step`` models; for each, an encoder set S_enc of
  K ~ U[enc_set_min, enc_set_max] of its evaluations and a disjoint target batch S_dec of
  ``target_batch_size`` evaluations.
- **Schedule**: ``steps`` is sized so that training on the MMLU-Pro train split of the 18 seen
  models finishes within 15 minutes on 2 CPU cores (measured; see the package README in the
  final report). The paper trains for up to 2,500 epochs on a GPU, which we cannot afford.

Usage::

    cfg = LocusConfig(steps=200, d_model=32)   # validated in __post_init__
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.minilm import EMBED_DIM


@dataclass
class LocusConfig:
    """All LOCUS hyper-parameters; ``asdict(cfg)`` is what checkpoints store."""

    # --- architecture
    input_dim: int = field(
        default=EMBED_DIM, metadata={"help": "query encoding size (all-MiniLM-L6-v2: 384)"}
    )
    d_model: int = field(default=128, metadata={"help": "token / model-embedding size d"})
    num_latents: int = field(
        default=64, metadata={"help": "learned inducing points r per ISAB block"}
    )
    num_heads: int = field(default=4, metadata={"help": "attention heads in every MAB"})
    num_isab: int = field(default=2, metadata={"help": "number of stacked ISAB blocks L"})
    predictor_hidden: int = field(
        default=64, metadata={"help": "hidden width of the correctness MLP (3d -> h -> 1)"}
    )
    dropout: float = field(
        default=0.1, metadata={"help": "dropout in the encoder and the predictor"}
    )

    # --- regularisation
    noise_std_start: float = field(
        default=0.10, metadata={"help": "query-noise std at step 0 (Gaussian, per coordinate)"}
    )
    noise_std_end: float = field(
        default=0.05, metadata={"help": "query-noise std after the cosine anneal"}
    )
    noise_anneal_frac: float = field(
        default=1.0,
        metadata={"help": "fraction of the steps over which the noise std is annealed"},
    )

    # --- optimisation
    lr_encoder: float = field(
        default=2e-4, metadata={"help": "AdamW lr of the token map and set encoder"}
    )
    lr_decoder: float = field(
        default=8e-4, metadata={"help": "AdamW lr of the correctness predictor"}
    )
    weight_decay: float = field(default=5e-2, metadata={"help": "AdamW weight decay (both)"})
    warmup_steps: int = field(default=50, metadata={"help": "linear lr warm-up steps"})
    lr_final_frac: float = field(
        default=1.0,
        metadata={
            "help": "lr after the cosine decay that follows warm-up, as a fraction; 1 = constant"
        },
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "decay of an exponential moving average of the weights, used for "
            "validation and the checkpoint; 0 disables it"
        },
    )
    grad_clip: float = field(
        default=1.0, metadata={"help": "max global grad norm; 0 disables clipping"}
    )

    # --- episodes
    models_per_step: int = field(
        default=8, metadata={"help": "models sampled per step (with replacement if fewer)"}
    )
    enc_set_min: int = field(
        default=256, metadata={"help": "smallest encoder set S_enc drawn per model"}
    )
    enc_set_max: int = field(
        default=1024, metadata={"help": "largest encoder set S_enc drawn per model"}
    )
    target_batch_size: int = field(
        default=256, metadata={"help": "target evaluations S_dec per model (disjoint from S_enc)"}
    )

    # --- schedule
    steps: int = field(default=2000, metadata={"help": "optimisation steps"})
    eval_every: int = field(
        default=200, metadata={"help": "validate (and maybe checkpoint) every N steps"}
    )
    patience: int = field(
        default=0,
        metadata={"help": "stop after N validations without improvement; 0 never stops early"},
    )
    seed: int = field(default=42, metadata={"help": "seed for init, sampling and noise"})
    train_split: str = field(default="train", metadata={"help": "split the encoder learns on"})
    val_split: str = field(default="val", metadata={"help": "split for best-on-val selection"})

    def __post_init__(self) -> None:
        positive = (
            "input_dim",
            "d_model",
            "num_latents",
            "num_heads",
            "num_isab",
            "predictor_hidden",
            "models_per_step",
            "enc_set_min",
            "enc_set_max",
            "target_batch_size",
            "steps",
            "eval_every",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"LocusConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"LocusConfig.d_model ({self.d_model}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.enc_set_min > self.enc_set_max:
            raise ValueError(
                f"LocusConfig.enc_set_min ({self.enc_set_min}) exceeds "
                f"enc_set_max ({self.enc_set_max})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LocusConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("noise_std_start", "noise_std_end", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"LocusConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.noise_anneal_frac <= 1.0:
            raise ValueError(
                f"LocusConfig.noise_anneal_frac must be in (0, 1], got {self.noise_anneal_frac}"
            )
        for name in ("lr_encoder", "lr_decoder"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LocusConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.lr_final_frac <= 1.0:
            raise ValueError(
                f"LocusConfig.lr_final_frac must be in (0, 1], got {self.lr_final_frac}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"LocusConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.patience < 0:
            raise ValueError("LocusConfig.warmup_steps and patience must be >= 0")
        if self.train_split == self.val_split:
            raise ValueError("LocusConfig.train_split and val_split must differ")
