"""``ravan``: multi-head LoRA (sum_i s_i B_i H_i A_i) for federated fine-tuning (NOTES.md (e)).
See :mod:`.job`; the layer is :class:`~.layers.RavanLinear`."""

from training.research.ravan.config import RavanConfig
from training.research.ravan.layers import RavanLinear, inject_ravan

__all__ = ["RavanConfig", "RavanLinear", "inject_ravan"]
