import numpy as np
import pytest
import torch

from training.data.matrix import EvalMatrix
from training.evaluation.metrics import correctness_accuracy, routing_accuracy
from training.routers import (
    BestSingleRouter,
    ConstantRouter,
    KMeansConfig,
    KNNRouter,
    MLPConfig,
    OracleRouter,
    RandomRouter,
    load_router,
    local_train,
    predict_for,
    train_kmeans_router,
    train_mlp_router,
)
from training.routers.kmeans import cell_stats, global_centres, local_centroids
from training.routers.mlp import new_mlp_router


def synthetic(q=600, m=4, d=16, seed=0):
    """Two query clusters; model j is good on cluster (j % 2), cost grows with j."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, d)) * 3
    cl = rng.integers(0, 2, q)
    X = centres[cl] + rng.standard_normal((q, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    p = np.where((np.arange(m)[None, :] % 2) == cl[:, None], 0.9, 0.2)
    scores = (rng.random((q, m)) < p).astype(np.float32)
    cost = np.tile((np.arange(m) + 1) * 1e-4, (q, 1)).astype(np.float32)
    split = np.where(np.arange(q) < q * 0.8, "train", "test")
    return EvalMatrix(
        dataset="syn",
        query_ids=np.array([str(i) for i in range(q)]),
        queries=[""] * q,
        categories=cl.astype(str),
        split=split,
        embeddings=X,
        models=[f"m{j}" for j in range(m)],
        scores=scores,
        cost_usd=cost,
        prompt_tokens=np.ones((q, m), dtype=np.float32),
        completion_tokens=np.ones((q, m), dtype=np.float32),
    )


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    m = synthetic()
    return m.for_split("train"), m.for_split("test")


def test_learned_routers_beat_random_and_constant(data):
    tr, te = data
    rand = routing_accuracy(RandomRouter(tr).predict(te.embeddings).p_correct, te.scores)
    const = ConstantRouter(tr).predict(te.embeddings).p_correct
    routers = {
        "knn": KNNRouter(tr, k=20),
        "kmeans": train_kmeans_router(tr, KMeansConfig(k=4)),
        "mlp": train_mlp_router(tr, MLPConfig(input_dim=16, hidden=32, epochs=15), progress=False),
    }
    for name, r in routers.items():
        p = r.predict(te.embeddings).p_correct
        assert routing_accuracy(p, te.scores) > rand + 0.15, name
        assert correctness_accuracy(p, te.scores) > correctness_accuracy(const, te.scores) + 0.1, (
            name
        )


def test_oracle_and_best_single(data):
    tr, te = data
    oracle = OracleRouter(te)
    choice = oracle.choice()
    chosen = te.scores[np.arange(len(choice)), choice]
    assert chosen.mean() == pytest.approx(te.scores.max(1).mean())
    best = BestSingleRouter(tr)
    assert best.models[best.best] == tr.models[int(np.nanmean(tr.scores, 0).argmax())]


def test_checkpoints_round_trip(tmp_path, data):
    tr, te = data
    for r in (
        train_kmeans_router(tr, KMeansConfig(k=3)),
        train_mlp_router(tr, MLPConfig(input_dim=16, hidden=8, epochs=1), progress=False),
    ):
        back = load_router(r.save(tmp_path / f"{r.name}.pt"))
        a, b = r.predict(te.embeddings), back.predict(te.embeddings)
        assert np.array_equal(a.p_correct, b.p_correct) and np.array_equal(a.cost_usd, b.cost_usd)
        assert back.models == r.models


def test_local_train_touches_only_present_heads(data):
    tr, _ = data
    router = new_mlp_router(MLPConfig(input_dim=16, hidden=8), tr.models, tr.cost_usd)
    before = {k: v.clone() for k, v in router.net.state_dict().items()}
    rows = np.flatnonzero(~np.isnan(tr.scores[:, 1]))
    model_idx = np.full(len(rows), 1, dtype=np.int64)
    local_train(
        router.net, tr.embeddings[rows], model_idx, tr.scores[rows, 1],
        router.standardise_cost(tr.cost_usd[rows, 1]),
        epochs=1, batch_size=32, lr=1e-2, weight_decay=1e-2, grad_clip=1.0, cost_weight=0.5, seed=0,
    )  # fmt: skip
    after = router.net.state_dict()
    for j in range(len(tr.models)):
        changed = not torch.equal(before[f"head_w.{j}"], after[f"head_w.{j}"])
        assert changed == (j == 1), j
    assert not torch.equal(before["trunk.0.weight"], after["trunk.0.weight"])


def test_local_train_sgd_steps_along_the_gradient(data):
    """One full-batch SGD step moves each parameter by -lr * (gradient + weight decay), where a
    fresh AdamW's first step is lr * sign(gradient) whatever the gradient's size."""
    tr, _ = data
    rows = np.flatnonzero(~np.isnan(tr.scores[:, 1]))
    args = (
        tr.embeddings[rows], np.full(len(rows), 1, dtype=np.int64), tr.scores[rows, 1],
    )  # fmt: skip
    steps = {}
    for opt in ("sgd", "adamw"):
        router = new_mlp_router(
            MLPConfig(input_dim=16, hidden=8, dropout=0.0), tr.models, tr.cost_usd
        )
        w0 = router.net.trunk[0].weight.detach().clone()
        cz = router.standardise_cost(tr.cost_usd[rows, 1])
        # the gradient at the start, as local_train's loss defines it (no clipping: norm < 1e3)
        out = router.net.rows(torch.as_tensor(args[0]), torch.as_tensor(args[1]))
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                out[:, 0], torch.as_tensor(args[2], dtype=torch.float32)
            )
            + 0.5 * ((out[:, 1] - torch.as_tensor(cz, dtype=torch.float32)) ** 2).mean()
        )
        (grad,) = torch.autograd.grad(loss, router.net.trunk[0].weight)
        router.net.zero_grad(set_to_none=True)
        local_train(
            router.net, *args, cz, epochs=1, batch_size=len(rows), lr=0.1, weight_decay=1e-2,
            grad_clip=1e3, cost_weight=0.5, seed=0, optimizer=opt,
        )  # fmt: skip
        steps[opt] = (router.net.trunk[0].weight.detach() - w0, grad, w0)
    step, grad, w0 = steps["sgd"]
    assert torch.allclose(step, -0.1 * (grad + 1e-2 * w0), atol=1e-6)
    step, grad, w0 = steps["adamw"]
    moved = grad.abs() > 1e-6
    assert torch.allclose(
        step[moved], -0.1 * torch.sign(grad[moved]) - 0.1 * 1e-2 * w0[moved], atol=1e-3
    )
    with pytest.raises(ValueError, match="optimizer must be one of"):
        local_train(
            router.net, *args, cz, epochs=1, batch_size=8, lr=0.1, weight_decay=0.0,
            grad_clip=1.0, cost_weight=0.5, seed=0, optimizer="lion",
        )  # fmt: skip


def test_two_pass_kmeans_pieces_match_a_central_fit(data):
    tr, te = data
    halves = [tr.subset(np.arange(tr.num_queries) % 2 == h) for h in (0, 1)]
    cents, counts = zip(*(local_centroids(h.embeddings, 4) for h in halves), strict=True)
    centres = global_centres(np.concatenate(cents), np.concatenate(counts), 2)
    assert centres.shape == (2, 16)
    stats = [
        cell_stats(h.embeddings[q], m_, h.scores[q, m_], h.cost_usd[q, m_], centres, 4)
        for h in halves
        for q, m_ in [np.nonzero(~np.isnan(h.scores))]
    ]
    counts_total = sum(s[2] for s in stats)
    assert counts_total.sum() == (~np.isnan(tr.scores)).sum()


def test_unknown_model_is_a_clear_key_error(data):
    tr, te = data
    with pytest.raises(KeyError, match="knows no model"):
        predict_for(ConstantRouter(tr), te.embeddings, ["m0", "nope"])
    out = predict_for(ConstantRouter(tr), te.embeddings, ["m2", "m0"])
    assert out.p_correct.shape == (te.num_queries, 2)
