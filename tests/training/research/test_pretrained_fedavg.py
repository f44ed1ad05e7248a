"""pretrained-fedavg: the model, the alignment count, label skew, FedAvg, and the quick path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.research.federated import InProcessBackend
from training.research.jobs import run_job
from training.research.pretrained_fedavg.config import PretrainedFedAvgConfig
from training.research.pretrained_fedavg.model import (
    grad,
    loss,
    make_data,
    make_signal,
    misaligned,
)
from training.research.pretrained_fedavg.train import (
    client_data,
    client_labels,
    controlled_init,
    experiment_config,
    fedavg_experiment,
    local_gd,
    random_init,
    signal,
)


def test_alignment_count_by_hand():
    mu = np.array([1.0, 0.0, 0.0])
    w = np.zeros((2, 3, 3))
    w[0, 0], w[0, 1], w[0, 2] = [1, 0, 0], [-1, 5, 0], [0, 1, 0]  # F_+1: aligned, mis, mis (0)
    w[1, 0], w[1, 1], w[1, 2] = [-2, 0, 0], [3, 0, 0], [-0.1, 9, 9]  # F_-1: aligned, mis, aligned
    assert misaligned(w, mu) == 3


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    mu = make_signal(rng, 7, 1.0)
    data = make_data(rng, rng.choice([-1.0, 1.0], 9), mu, 1.0)
    w = rng.standard_normal((2, 3, 7))
    g = grad(w, data.x, data.y)
    for idx in [(0, 0, 0), (1, 2, 3), (0, 1, 6)]:
        e = np.zeros_like(w)
        e[idx] = 1e-6
        assert (loss(w + e, data) - loss(w - e, data)) / 2e-6 == pytest.approx(g[idx], rel=1e-4)


def test_noise_is_orthogonal_to_the_signal():
    rng = np.random.default_rng(1)
    mu = make_signal(rng, 50, 2.0)
    data = make_data(rng, np.ones(20), mu, 1.0)
    np.testing.assert_allclose(data.x[:, 1] @ mu, 0.0, atol=1e-9)
    np.testing.assert_allclose(data.x[:, 0], np.tile(mu, (20, 1)))


@pytest.mark.parametrize("aligned", [0.0, 0.3, 1.0])
def test_controlled_init_has_the_requested_misaligned_count(aligned):
    cfg = PretrainedFedAvgConfig(dim=50, filters=10, sigma0=0.01, align_scale=0.5)
    mu = signal(experiment_config(cfg, seed=0, iid=True))
    w = controlled_init(cfg, 0, aligned)
    assert misaligned(w, mu) == 2 * (10 - round(aligned * 10))


def test_label_skew_and_iid_partitions():
    cfg = experiment_config(PretrainedFedAvgConfig(per_client=40, skew=0.9), seed=0, iid=False)
    assert (client_labels(cfg, 0, iid=False) == 1).mean() == pytest.approx(0.9)
    assert (client_labels(cfg, 9, iid=False) == -1).mean() == pytest.approx(0.9)
    iid = client_labels(cfg, 0, iid=True)
    assert 0.2 < (iid == 1).mean() < 0.8


def test_fedavg_round_is_the_sample_weighted_mean_of_local_gd():
    cfg = PretrainedFedAvgConfig(dim=20, filters=3, clients=4, per_client=8, rounds=1)
    w0 = random_init(cfg, 0)
    exp = fedavg_experiment("t", cfg, seed=0, iid=False, init=w0)
    (res,) = InProcessBackend().run([exp])
    local = local_gd(exp.config, range(4), {"w": w0}, {"round": 0})
    np.testing.assert_allclose(res.final["w"], np.mean([a["w"] for a, _ in local], axis=0))
    assert all(n == len(client_data(exp.config, 0).y) for _, n in local)
    assert not np.allclose(local[0][0]["w"], local[-1][0]["w"])  # clients' own data


def test_quick_path_writes_the_report(tmp_path):
    cfg = PretrainedFedAvgConfig(
        dim=20, filters=4, rounds=5, aligned_fractions="0,0.5,1", digits_rounds=2,
        digits_pretrain_epochs=2, test_size=200, pretrain_steps=5, pretrain_samples=40,
        flower=False,
    )  # fmt: skip
    run_job("pretrained-fedavg", cfg, tmp_path, seeds=2, quick=False, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    ids = {c["id"] for c in on_disk["claims"]}
    assert ids == {
        "heterogeneity_hurts_less_from_pretrained", "pretraining_fewer_misaligned",
        "penalty_tracks_misaligned", "digits_check",
    }  # fmt: skip
    assert len(on_disk["results"]["synthetic"]["random"]["penalty"]) == 2
    assert (tmp_path / "errors.png").stat().st_size > 0 and (tmp_path / "sweep.png").exists()
