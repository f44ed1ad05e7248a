"""``pubswap``: federated RLVR with LoRA and public-data response swaps (NOTES.md (d)).
See :mod:`.job`; the swap rule is :func:`~.grpo.swap_group`, the rewards :mod:`.rewards`."""

from training.research.pubswap.config import PubSwapConfig

__all__ = ["PubSwapConfig"]
