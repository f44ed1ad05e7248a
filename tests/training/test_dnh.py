"""Do no harm with uncertainty (``locus_kr.decide_dnh``) and the per-model prior calibration."""

from __future__ import annotations

import numpy as np

from training.routers.locus_kr import (
    KRParams,
    apply_calibration,
    calibrate_prior,
    decide_dnh,
    evidence_weight,
    prediction_sd,
    utility_default,
)

KR = KRParams(k=10, beta=10.0, alpha=0.5, alpha_g=2.0)


def _preds(rng: np.random.Generator, n_queries: int = 500) -> np.ndarray:
    return rng.uniform(0.05, 0.95, size=(n_queries, 3)).astype(np.float32)


def test_without_evidence_the_best_supported_model_is_kept() -> None:
    rng = np.random.default_rng(0)
    p = _preds(rng)
    zero_cost = np.zeros_like(p)
    # model 0 is the default with 512 evaluations close to every query; models 1, 2 have none
    sd = np.stack(
        [
            prediction_sd(p[:, 0], 512, np.full(len(p), 50.0), KR),
            prediction_sd(p[:, 1], 0, np.zeros(len(p)), KR),
            prediction_sd(p[:, 2], 0, np.zeros(len(p)), KR),
        ],
        1,
    )
    # a model without evidence has the prior's full spread: p (1 - p) (1/alpha_g + 1/alpha)
    assert np.allclose(sd[:, 1] ** 2, p[:, 1] * (1 - p[:, 1]) * (1 / 2.0 + 1 / 0.5), rtol=1e-4)
    ch = decide_dnh(p, sd, zero_cost, 0.0, default=0, gamma=3.0)
    assert (ch == 0).all()
    # plain argmax would have left the default for about two thirds of the queries
    assert (p.argmax(1) != 0).mean() > 0.5


def test_with_strong_evidence_it_is_the_plain_argmax() -> None:
    rng = np.random.default_rng(1)
    p = _preds(rng)
    sd = np.stack([prediction_sd(p[:, j], 10**7, np.full(len(p), 1e7), KR) for j in range(3)], 1)
    assert sd.max() < 1e-3
    cost = rng.uniform(1e-4, 1e-2, size=p.shape).astype(np.float32)
    for lam in (0.0, 10.0, 100.0):
        plain = np.argmax(p - lam * cost, axis=1)
        d = utility_default(p.mean(0), cost.mean(0), lam)
        assert np.array_equal(decide_dnh(p, sd, cost, lam, d, gamma=0.5), plain)
    # gamma = margin = 0 is the plain argmax whatever the uncertainty
    big = np.full_like(p, 0.5)
    assert np.array_equal(decide_dnh(p, big, np.zeros_like(p), 0.0, 0, 0.0), p.argmax(1))


def test_less_evidence_or_more_distant_queries_leave_the_default_less_often() -> None:
    rng = np.random.default_rng(2)
    p = _preds(rng, 2000)
    zero = np.zeros_like(p)

    def switches(n: int, weight: float) -> float:
        sd = np.stack([prediction_sd(p[:, j], n, np.full(len(p), weight), KR) for j in range(3)], 1)
        return float((decide_dnh(p, sd, zero, 0.0, 0, gamma=0.5) != 0).mean())

    by_n = [switches(n, 5.0) for n in (0, 16, 128, 1024)]
    by_w = [switches(128, w) for w in (0.0, 0.5, 5.0, 50.0)]
    assert by_n == sorted(by_n) and by_n[0] < by_n[-1]
    assert by_w == sorted(by_w) and by_w[0] < by_w[-1]


def test_evidence_weight_counts_near_evaluations() -> None:
    sims = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    w = evidence_weight(sims, 2, 10.0)
    assert np.isclose(w[0], 2.0) and w[1] < 1e-3
    assert evidence_weight(sims, 0, 10.0).tolist() == [0.0, 0.0]


def test_utility_default_follows_lambda_along_the_models() -> None:
    means, costs = np.array([0.8, 0.7, 0.5]), np.array([1e-2, 1e-3, 1e-5])
    assert utility_default(means, costs, 0.0) == 0
    assert utility_default(means, costs, 20.0) == 1
    assert utility_default(means, costs, 1e5) == 2


def test_calibration_stays_identity_without_evidence_and_fits_a_slope_with_it() -> None:
    rng = np.random.default_rng(3)
    assert calibrate_prior(np.array([]), np.array([]), 3.0) == (1.0, 0.0)
    # the prior is right in direction but twice too confident: true logit = 0.5 * prior logit
    q = rng.uniform(0.02, 0.98, size=20000)
    z = np.log(q / (1 - q))
    y = (rng.random(len(q)) < 1 / (1 + np.exp(-(0.5 * z + 0.3)))).astype(np.float32)
    a, b = calibrate_prior(q, y, 3.0)
    assert abs(a - 0.5) < 0.05 and abs(b - 0.3) < 0.05
    a_few, b_few = calibrate_prior(q[:8], y[:8], 1e6)  # a huge penalty keeps the identity
    assert abs(a_few - 1.0) < 1e-3 and abs(b_few) < 1e-3
    assert np.allclose(apply_calibration(q[:50], 1.0, 0.0), q[:50], atol=1e-6)


def test_lambda_sweeps_match_the_per_lambda_decisions() -> None:
    from training.evaluation import metrics as mt
    from training.evaluation.generalization import choose_sweep, dnh_sweep

    rng = np.random.default_rng(4)
    p = _preds(rng, 300)
    p[:50, 1] = p[:50, 0]  # ties
    sd = rng.uniform(0.0, 0.3, size=p.shape).astype(np.float32)
    cost = rng.choice([1e-5, 1e-3, 1e-2], size=p.shape).astype(np.float32)
    lams = mt.LAMBDAS[::4]
    means, mcost = p.mean(0), cost.mean(0)
    defaults = np.array([utility_default(means, mcost, float(lam)) for lam in lams])
    sweep = dnh_sweep(p, sd, cost, lams, defaults, 0.2, 0.02)
    for i, lam in enumerate(lams):
        assert np.array_equal(sweep[i], decide_dnh(p, sd, cost, float(lam), defaults[i], 0.2, 0.02))
    plain = choose_sweep(p, cost, lams)
    for i, lam in enumerate(lams):
        assert np.array_equal(plain[i], mt.choose(p, cost, float(lam)))
