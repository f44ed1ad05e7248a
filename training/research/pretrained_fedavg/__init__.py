"""``pretrained-fedavg``: why FedAvg from a pre-trained initialisation suffers less from data
heterogeneity: aligned and misaligned filters of a two-layer CNN (NOTES.md (j)). See :mod:`.job`."""

from training.research.pretrained_fedavg.config import PretrainedFedAvgConfig

__all__ = ["PretrainedFedAvgConfig"]
