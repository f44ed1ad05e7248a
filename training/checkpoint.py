"""Checkpoints: one self-describing format, written and read by this module only.

Every component's checkpoint is one ``torch.save``'d dict::

    {"kind": "locus" | "mlp" | "kmeans" | "tab_policy" | "mf_fold" | ...,
     "config": {...},          # the component's config dataclass, asdict
     "state_dict": {...},      # what it learned: an nn.Module's state_dict, or a router's tables
     "step": int, "metrics": {...},
     ...}                      # component extras (LOCUS "routing", TAB "spec", MF "embeddings")

and is read back with ``weights_only=True`` (tensors, numbers, strings, lists, dicts: no pickled
code runs). Components rebuild themselves from the dict (``LocusEmbedder.from_checkpoint``,
``training.routers.load_router``, ``BudgetPolicy.from_checkpoint``), the config first.

Older files still load: the routers (``mlp``, ``kmeans``) wrote their tables under ``"state"``
(the shipped bundle's ``training/artifacts/default/{mlp,kmeans}.pt`` do), and the evaluation's
MF fold cache had no kind, config, step or metrics. :func:`load_checkpoint` returns them in the
format above, so no reader knows the old keys, and the committed artifacts are not rewritten.

Usage::

    save_checkpoint(path, kind="mlp", config=asdict(cfg), state_dict=state, metrics=m)
    ckpt = load_checkpoint(path, kind="mlp", what="an MLP router")
    router = MLPRouter.from_checkpoint_dict(ckpt)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: Any,
    step: int = 0,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write one checkpoint (parent folders made); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "kind": kind,
        "config": config,
        "state_dict": state_dict,
        "step": step,
        "metrics": dict(metrics or {}),
        **extra,
    }
    torch.save(ckpt, path)
    return path


def _upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """An older checkpoint in the current format (see the module docstring)."""
    out = dict(ckpt)
    if "state_dict" not in out and "state" in out:  # routers before the one format
        out["state_dict"] = out.pop("state")
    out.setdefault("config", {})
    out.setdefault("step", 0)
    out.setdefault("metrics", {})
    return out


def load_checkpoint(
    src: str | Path | bytes, *, kind: str | None = None, what: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint file (or its bytes) on the CPU, in the current format.

    ``kind``: the kind expected; another (or none) is a ``ValueError`` naming ``what`` the
    caller wanted ("a LOCUS checkpoint"). Bytes that are not a checkpoint dict are a
    ``ValueError`` too, so a caller handling uploads has one exception to map.
    """
    name = "<bytes>" if isinstance(src, bytes) else str(src)
    f: Any = io.BytesIO(src) if isinstance(src, bytes) else Path(src)
    try:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{name} is not a checkpoint: {type(exc).__name__}") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"{name} is not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    if kind is not None and ckpt.get("kind") != kind:
        raise ValueError(
            f"{name} is not {what or kind + ' checkpoint'} (kind={ckpt.get('kind')!r})"
        )
    return _upgrade(ckpt)
