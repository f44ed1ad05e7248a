"""The federated research jobs give the same numbers on Flower as in-process (one Flower session
for both jobs' tiny experiments: the Simulation Engine's start-up is most of the cost)."""

from __future__ import annotations

import numpy as np
import pytest

from training.research.avg_reward_q.config import AvgRewardQConfig
from training.research.avg_reward_q.train import q_experiment, stage_rounds
from training.research.federated import InProcessBackend
from training.research.pretrained_fedavg.config import PretrainedFedAvgConfig
from training.research.pretrained_fedavg.train import fedavg_experiment, random_init

pytest.importorskip("flwr")


@pytest.mark.slow
def test_flower_and_in_process_agree_on_tiny_runs():
    from federation.research_app import FlowerBackend

    q_exp = q_experiment(
        "q", {"kind": "riverswim", "states": 4}, seed=3, agents=3,
        rounds=stage_rounds(AvgRewardQConfig(stages=3, stage_base=0.5), budget=1.0),
        reward_noise=True,
    )  # fmt: skip
    cfg = PretrainedFedAvgConfig(dim=12, filters=2, clients=3, per_client=6, rounds=3)
    cnn_exp = fedavg_experiment("cnn", cfg, seed=1, iid=False, init=random_init(cfg, 1))
    cnn_exp.keep_history = True
    ref = InProcessBackend().run([q_exp, cnn_exp])
    got = FlowerBackend().run([q_exp, cnn_exp])
    for a, b in zip(ref, got, strict=True):
        assert a.name == b.name and b.backend == "flower"
        assert len(a.history) == len(b.history) > 0
        for ha, hb in zip(a.history, b.history, strict=True):
            for k in ha:
                np.testing.assert_array_equal(ha[k], hb[k])
