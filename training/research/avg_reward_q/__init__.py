"""``avg-reward-q``: Q-learning for weakly communicating average-reward MDPs, single-agent and
federated (NOTES.md (h)). See :mod:`.job` for the experiments and claims."""

from training.research.avg_reward_q.config import AvgRewardQConfig

__all__ = ["AvgRewardQConfig"]
