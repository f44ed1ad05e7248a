"""The budget policy: a small MLP from the conversation state to a distribution over budget levels.

Pure: tensors in, logits out. The three embeddings (current, past mean, future mean) share one
linear projection; the scalars (turn, tokens used and left, truncations, predicted difficulty;
see ``features.py``) join them before a two-layer MLP.

Usage::

    policy = BudgetPolicy(PolicyConfig(all_subq=True))
    logits = policy(emb, scal)              # [N, num_levels]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from budget_controller.config import PolicyConfig
from budget_controller.features import NUM_SCALARS, FeatureSpec
from training.checkpoint import load_checkpoint, save_checkpoint


class BudgetPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.embed_dim, cfg.proj_dim)
        self.mlp = nn.Sequential(
            nn.Linear(3 * cfg.proj_dim + NUM_SCALARS, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, cfg.num_levels),
        )
        # Start near uniform so early GRPO groups explore every level.
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.bias)
        nn.init.normal_(last.weight, std=0.01)

    def forward(self, emb: torch.Tensor, scal: torch.Tensor) -> torch.Tensor:
        # emb [N, 3, D] -> [N, 3, P] -> [N, 3P]
        z = torch.tanh(self.proj(emb)).flatten(1)
        return self.mlp(torch.cat([z, scal], dim=1))  # [N, K]

    # --- checkpoints: training.checkpoint's format, kind "tab_policy", plus the feature spec
    def save(self, path: Path, *, spec: FeatureSpec, step: int, metrics: dict[str, Any]) -> None:
        save_checkpoint(
            path,
            kind="tab_policy",
            config=dataclasses.asdict(self.cfg),
            state_dict={k: v.detach().clone() for k, v in self.state_dict().items()},
            step=step,
            metrics=metrics,
            spec=spec.to_dict(),
        )

    @classmethod
    def from_checkpoint(cls, path: Path | str) -> tuple[BudgetPolicy, FeatureSpec, dict[str, Any]]:
        ckpt = load_checkpoint(path, kind="tab_policy", what="a TAB policy checkpoint")
        policy = cls(PolicyConfig(**ckpt["config"]))
        policy.load_state_dict(ckpt["state_dict"])
        policy.eval()
        info = {"step": ckpt["step"], "metrics": ckpt["metrics"]}
        return policy, FeatureSpec.from_dict(ckpt["spec"]), info
