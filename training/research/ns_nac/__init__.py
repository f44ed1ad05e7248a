"""``ns-nac``: natural actor-critic with restarts for non-stationary average-reward MDPs, and
its bandit-over-RL wrapper BORL-NS-NAC (NOTES.md (i)). See :mod:`.job`."""

from training.research.ns_nac.config import NSNACConfig

__all__ = ["NSNACConfig"]
