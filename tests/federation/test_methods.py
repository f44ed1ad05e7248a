"""The pieces behind the federated MLP methods and the report's one AUC scale, without Ray:
the shared (learnt-model-embedding) head, the head conditioned on fixed model embeddings, the
never-chosen head of a model nobody logged, the server optimisers, seeded local rounds, the
fixed calibration set, held-out models and the common-range AUC."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from federation.aggregate import ServerOptimizer, group_of
from federation.client_app import calibration_seed, calibration_set
from federation.config import FederationConfig
from federation.data_source import experiment_partition, experiment_validation, federation_models
from federation.local import (
    EmbeddingHeadNet,
    NetSpec,
    SharedHeadNet,
    as_plain,
    embedding_from_data,
    mlp_round,
    mlp_router_from_arrays,
    model_embedding,
    net_arrays,
    new_net,
    train_mlp,
)
from federation.partition import global_test
from federation.routers import hull_auc, router_auc, router_aucs, router_curve
from training.evaluation.metrics import common_range_auc, pool_cost_range
from training.routers.mlp import MLPConfig, MLPRouter

CFG = MLPConfig(hidden=16, seed=0)


def tiny_router(spec: NetSpec, models: int = 4) -> MLPRouter:
    return MLPRouter(
        new_net(CFG, models, spec, seed=3), CFG, [f"m{i}" for i in range(models)], -9.0, 2.0
    )


def rows(models: list[int], n: int = 40, seed: int = 0):  # type: ignore[no-untyped-def]
    from training.data.matrix import EvalMatrix

    rng = np.random.default_rng(seed)
    scores = np.full((n, 4), np.nan, dtype=np.float32)
    cost = np.full((n, 4), np.nan, dtype=np.float32)
    for i in range(n):
        j = models[i % len(models)]
        scores[i, j] = float(rng.random() < 0.6)
        cost[i, j] = 1e-4 * (j + 1)
    return EvalMatrix(
        dataset="t",
        query_ids=np.array([str(i) for i in range(n)]),
        queries=[""] * n,
        categories=np.array(["a"] * n),
        split=np.array(["train"] * n),
        embeddings=rng.normal(size=(n, 384)).astype(np.float32),
        models=[f"m{i}" for i in range(4)],
        scores=scores,
        cost_usd=cost,
        prompt_tokens=np.zeros_like(cost),
        completion_tokens=np.zeros_like(cost),
    )


def test_shared_head_trains_every_model_scorer_and_exports_as_per_model_heads() -> None:
    router = tiny_router(NetSpec("shared", 3))
    assert isinstance(router.net, SharedHeadNet)
    before = net_arrays(router.net)
    sent, counts, _ = mlp_round(router, rows([0, 1]), epochs=2, batch_size=8, lr=1e-2, seed=1)
    # a client with rows of models 0 and 1 moves the shared head (it scores every model) and
    # only those two models' embeddings and biases; models 2 and 3 keep theirs bit for bit
    assert {group_of(k) for k in sent} == {"trunk", "head:0", "head:1"}
    assert "shared_w" in sent and "basis" in sent
    after = net_arrays(router.net)
    for k in ("model_z.2", "model_z.3", "head_b.2", "head_b.3"):
        assert (after[k] == before[k]).all(), k
    assert not np.allclose(after["shared_w"], before["shared_w"])
    assert counts["trunk"] == 40 and counts["head:0"] == 20
    # the checkpoint form has ordinary per-model heads and the same outputs
    X = np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)
    plain = as_plain(router)
    assert not isinstance(plain.net, SharedHeadNet)
    np.testing.assert_allclose(plain.predict(X).p_correct, router.predict(X).p_correct, atol=1e-6)
    np.testing.assert_allclose(plain.predict(X).cost_usd, router.predict(X).cost_usd, rtol=1e-5)


@pytest.mark.parametrize("head", ["per-model", "shared"])
def test_a_local_round_is_a_function_of_its_seed(head: str) -> None:
    """Dropout masks and shuffles come from the round's seed, not from whatever the worker's
    global torch generator did before."""
    outs = []
    for noise in (0, 1):
        torch.manual_seed(1234 + noise)  # a different history of the global generator
        torch.rand(7)
        r = tiny_router(NetSpec(head, 3))
        sent, _, loss = mlp_round(r, rows([0, 2]), epochs=1, batch_size=8, lr=1e-2, seed=5)
        outs.append((sent, loss))
    assert outs[0][1] == outs[1][1]
    for k, v in outs[0][0].items():
        assert (v == outs[1][0][k]).all(), k
    # a different seed gives a different update
    r = tiny_router(NetSpec(head, 3))
    other, _, _ = mlp_round(r, rows([0, 2]), epochs=1, batch_size=8, lr=1e-2, seed=6)
    assert any(not np.array_equal(v, outs[0][0][k]) for k, v in other.items())


@pytest.mark.parametrize("head", ["per-model", "embedding"])
def test_fedprox_keeps_the_shared_parameters_nearer_the_global_ones(head: str) -> None:
    """FedProx's term covers what every model's score goes through: the trunk, and with the
    embedding-conditioned head that head too."""
    prefixes = ("trunk.",) if head == "per-model" else ("trunk.", "cond_")

    def drift(mu: float) -> float:
        r = tiny_router(NetSpec()) if head == "per-model" else emb_router()
        g = net_arrays(r.net)
        sent, _, _ = mlp_round(r, rows([0, 1]), epochs=5, batch_size=8, lr=1e-2, seed=1, prox_mu=mu)
        return sum(float(((sent[k] - g[k]) ** 2).sum()) for k in sent if k.startswith(prefixes))

    assert drift(10.0) < 0.5 * drift(0.0)
    if head == "embedding":
        net = emb_router().net
        assert {id(p) for p in net.shared_parameters()} == {id(p) for p in net.parameters()}


def test_server_optimisers_step_on_the_trunk_only() -> None:
    g = {"trunk.0.weight": np.zeros(2, np.float32), "head_w.0": np.zeros(2, np.float32)}
    avg = {"trunk.0.weight": np.ones(2, np.float32), "head_w.0": np.ones(2, np.float32)}
    plain = ServerOptimizer("avg").step(g, avg)
    assert (plain["trunk.0.weight"] == 1).all() and (plain["head_w.0"] == 1).all()
    mom = ServerOptimizer("momentum", lr=1.0, beta=0.5)
    first = mom.step(g, avg)
    assert (first["trunk.0.weight"] == 1).all()  # v = d
    second = mom.step(first, {k: v + 1 for k, v in first.items()})
    assert (second["trunk.0.weight"] == 2.5).all()  # v = 0.5 * 1 + 1, added to 1
    assert (second["head_w.0"] == 2).all()  # heads take the plain mean
    adam = ServerOptimizer("adam", lr=0.1, beta=0.9).step(g, avg)
    # m = 0.1, u = 0.01: one step of lr * m / (sqrt(u) + tau) ~ lr
    np.testing.assert_allclose(adam["trunk.0.weight"], 0.1 / (0.1 + 1e-3) * 0.1, rtol=1e-5)
    with pytest.raises(ValueError):
        ServerOptimizer("sgd")


def test_the_kept_round_is_chosen_on_validation_or_is_the_last() -> None:
    """What the ServerApp records about the round it keeps: the validation-chosen round when
    it saw per-round validation figures, else the last round and why."""
    from federation.server_app import FederatedRun

    best = {"round": 7, "val_auc": 0.61, "arrays": {}}
    kept = FederatedRun(FederationConfig())._selection(best, 30)
    assert (kept["rule"], kept["round"], kept["of_rounds"], kept["val_auc"]) == (
        "validation", 7, 30, 0.61,
    )  # fmt: skip
    no_val = FederatedRun(FederationConfig())._selection({}, 30)
    assert (no_val["rule"], no_val["round"]) == ("last", 30) and "server-eval" in no_val["why"]
    last = FederatedRun(FederationConfig(select_round="last"))._selection({}, 30)
    assert last["why"] == "select-round=last"
    with pytest.raises(ValueError, match="select-round"):
        FederationConfig(select_round="best")
    assert FederationConfig.from_run_config({"select-round": "last"}).select_round == "last"


def test_the_crossfitted_figure_does_not_reward_a_lucky_round() -> None:
    """A spike on one half of the validation queries wins the kept-round rule's max, but the
    cross-fitted figure scores each half at the round chosen on the other one."""
    from federation.simulate import crossfit_val_auc

    def rec(rnd: int, a: float, b: float, stage: str = "train") -> dict:
        return {"stage": stage, "round": rnd, "val_auc": (a + b) / 2, "val_auc_halves": [a, b]}

    noisy = [rec(0, 0.50, 0.50), rec(1, 0.90, 0.52), rec(2, 0.55, 0.56)]
    smooth = [rec(0, 0.50, 0.50), rec(1, 0.70, 0.70), rec(2, 0.70, 0.70), rec(3, 0.9, 0.9, "join")]
    cf = crossfit_val_auc([noisy, smooth])
    assert cf is not None
    # half 0 scored at the best round of half 1 (smooth round 1, the earlier of a tie), and
    # half 1 at the best of half 0 (noisy round 1: its spike does not carry over)
    assert [(p["run"], p["round"], p["val_auc"]) for p in cf["picks"]] == [
        (1, 1, 0.70), (0, 1, 0.52),
    ]  # fmt: skip
    assert cf["val_auc"] == pytest.approx(0.61)
    assert crossfit_val_auc([[{"stage": "train", "round": 0, "val_auc": None}]]) is None


def test_a_grid_variant_is_the_grid_run_with_its_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from federation.grid import run_grid, runs, with_settings

    base = runs()["rb_mlp_emb_s1"]
    variant = with_settings(base, ["local-epochs=2", "server_ema = 0.9"])
    assert variant == replace(base, local_epochs=2, server_ema=0.9)
    with pytest.raises(KeyError, match="local-epoch"):
        with_settings(base, ["local-epoch=2"])
    with pytest.raises(ValueError, match="key=value"):
        with_settings(base, ["local-epochs"])
    with pytest.raises(ValueError, match="suffix"):  # never over the grid's own reports
        run_grid(tmp_path, tmp_path, pattern="rb_mlp_emb_s1", settings=["local-epochs=2"])


def test_the_kmeans_prior_is_the_best_on_validation_ties_to_the_earlier() -> None:
    from training.routers.kmeans import choose_prior

    score = {0.5: 0.1, 2.0: 0.3, 5.0: 0.3, 10.0: 0.2}
    router, choice = choose_prior(lambda p: ("router", p), lambda r: score[r[1]], list(score))
    assert router == ("router", 2.0) and choice["prior"] == 2.0 and choice["score"] == 0.3
    assert choice["scores"] == {"0.5": 0.1, "2": 0.3, "5": 0.3, "10": 0.2}
    assert FederationConfig().fixed_prior is None
    assert FederationConfig(kmeans_prior="20").fixed_prior == 20.0
    for bad in ("-1", "high", "nan", "inf"):
        with pytest.raises(ValueError, match="kmeans-prior"):
            FederationConfig(kmeans_prior=bad)
    for bad_lrs in ("0.001,0.001", "0", "nan", "x"):
        with pytest.raises(ValueError, match="lrs"):
            FederationConfig(lrs=bad_lrs)
    # a NaN validation score never wins
    _, nan_choice = choose_prior(
        lambda p: p, lambda p: float("nan") if p == 0.5 else -p, [0.5, 2.0]
    )
    assert nan_choice["prior"] == 2.0


def test_central_training_with_the_shared_head_learns() -> None:
    data = rows([0, 1, 2, 3], n=200)
    r = train_mlp(data, replace(CFG, epochs=3), NetSpec("shared", 4))
    assert r.predict(data.embeddings[:3]).p_correct.shape == (3, 4)


def test_held_out_models_stay_out_unless_a_run_says_otherwise() -> None:
    cfg = FederationConfig(logs="mmlu_pro", clients=4)
    models = federation_models(cfg)
    assert len(models) == 18 and "Yi-34B" not in models
    assert len(federation_models(replace(cfg, held_out="include"))) == 22
    # a run that onboards a held-out model by expansion names it
    assert "Yi-34B" in federation_models(replace(cfg, expand_model="Yi-34B"))
    parts = experiment_partition(cfg)
    assert parts[0].train.models == models
    # validation queries are the log's own val split, outside every client
    val = experiment_validation(cfg)
    assert set(val.split) == {"val"}
    seen = {q for p in parts for q in (*p.train.query_ids, *p.test.query_ids)}
    assert not seen & set(val.query_ids)


def test_calibration_set_is_drawn_once_per_client() -> None:
    parts = experiment_partition(FederationConfig(logs="routerbench", clients=4))
    p = parts[1]
    sets = [calibration_set(p, 5, 0.1, calibration_seed(0, p.client)) for _ in range(3)]
    assert all((s.query_ids == sets[0].query_ids).all() for s in sets)
    assert sets[0].num_queries == round(p.train.num_queries * 0.1)
    assert set(np.flatnonzero(sets[0].observed.any(axis=0))) <= {5}
    other = calibration_set(parts[2], 5, 0.1, calibration_seed(0, parts[2].client))
    assert not set(other.query_ids) & set(sets[0].query_ids)


def test_every_router_is_scored_on_the_pool_range() -> None:
    parts = experiment_partition(FederationConfig(logs="routerbench", clients=4))
    test = global_test(parts)
    span = pool_cost_range(test.cost_usd)
    r = train_mlp(parts[0].train, replace(CFG, epochs=2), NetSpec(), cost_moments=(-9.0, 2.0))
    cost, acc = router_curve(r, test)
    assert router_auc(r, test, span) == common_range_auc(cost, acc, *span)
    # the hull is on the same scale and no router beats mixing single models by much here
    h = hull_auc(test, span)
    assert 0.5 < h < 1 and router_auc(r, test, span) < h + 0.05
    # a client's narrow test pool is still scored on the report's range
    assert router_auc(r, parts[0].test, span) == common_range_auc(
        *router_curve(r, parts[0].test), *span
    )
    # several row sets from one prediction: each is router_auc on those queries alone
    half = np.arange(0, len(test.query_ids), 2)
    whole, part = router_aucs(r, test, span, [np.arange(len(test.query_ids)), half])
    assert whole == router_auc(r, test, span)
    assert part == pytest.approx(router_auc(r, test.subset(half), span), abs=1e-9)
    assert part != whole


def test_a_model_nobody_logged_is_never_chosen_by_the_kmeans_router() -> None:
    """Strong model skew can leave a model unlogged by every client: the federated K-means
    router (and the centralised one) must still build, and never route to it."""
    from federation.local import kmeans_from_stats
    from training.routers.kmeans import KMeansConfig

    centres = np.eye(2, 384, dtype=np.float32)
    counts = np.array([[3.0, 0.0, 2.0], [1.0, 0.0, 4.0]])
    sums = counts * 0.5
    r = kmeans_from_stats(KMeansConfig(k=2), ["a", "b", "c"], centres, sums, sums * 1e-3, counts)
    out = r.predict(centres)
    assert (out.p_correct[:, 1] == 0).all() and (out.cost_usd[:, 1] >= 1e5).all()
    np.testing.assert_allclose(out.p_correct[:, [0, 2]], 0.5, rtol=1e-6)


def emb_router(models: int = 4, dim: int = 5) -> MLPRouter:
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(models, dim)).astype(np.float32)
    prior = rng.normal(size=(models, 2)).astype(np.float32)
    net = new_net(CFG, models, NetSpec("embedding"), seed=3, model_emb=emb, model_prior=prior)
    return MLPRouter(net, CFG, [f"m{i}" for i in range(models)], -9.0, 2.0)


def test_embedding_head_trains_every_model_scorer_from_any_model_rows() -> None:
    """One head conditioned on fixed model embeddings: a client that logged only models 0 and 1
    changes the scorer of models 2 and 3 too; the embeddings stay put and are never sent."""
    router = emb_router()
    assert isinstance(router.net, EmbeddingHeadNet)
    before_w = router.net.head_weights().detach().clone()
    before = net_arrays(router.net)
    sent, counts, loss = mlp_round(router, rows([0, 1]), epochs=2, batch_size=8, lr=1e-2, seed=1)
    assert np.isfinite(loss) and counts["trunk"] == 40
    assert "model_emb" not in sent and "model_prior" not in sent
    assert group_of("model_emb") == group_of("model_prior") == "fixed"
    assert {"cond_w0", "cond_w", "cond_b0", "cond_b"} <= set(sent)
    assert not any(k.startswith(("head_w.", "head_b.", "model_z.")) for k in sent)
    after_w = router.net.head_weights().detach()
    for m in range(4):  # every model's effective head moved, logged or not
        assert not torch.allclose(after_w[m], before_w[m]), m
    assert (net_arrays(router.net)["model_emb"] == before["model_emb"]).all()
    # the per-row path used in training equals the all-models forward pass
    X = torch.as_tensor(np.random.default_rng(1).normal(size=(6, 384)).astype(np.float32))
    idx = torch.tensor([0, 3, 1, 2, 2, 0])
    with torch.no_grad():
        np.testing.assert_allclose(
            router.net.rows(X, idx).numpy(), router.net(X)[torch.arange(6), idx].numpy(), atol=1e-5
        )
    # checkpoints store ordinary per-model heads with the same outputs
    plain = as_plain(router)
    Xn = X.numpy()
    np.testing.assert_allclose(plain.predict(Xn).p_correct, router.predict(Xn).p_correct, atol=1e-6)
    np.testing.assert_allclose(plain.predict(Xn).cost_usd, router.predict(Xn).cost_usd, rtol=1e-5)
    # a client rebuilds the same router from the server's arrays (embeddings included)
    again = mlp_router_from_arrays(
        net_arrays(router.net), cfg=CFG, models=router.models, cost_mu=-9.0, cost_sigma=2.0,
        spec=NetSpec("embedding"),
    )  # fmt: skip
    np.testing.assert_array_equal(again.predict(Xn).p_correct, router.predict(Xn).p_correct)
    with pytest.raises(ValueError, match="embeddings"):
        new_net(CFG, 4, NetSpec("embedding"), seed=0)


def test_model_embedding_reads_per_cluster_accuracy_and_cost() -> None:
    # 2 clusters x 3 models: model 0 good in cluster 0, model 1 good in cluster 1, model 2 unlogged
    counts = np.array([[10.0, 10.0, 0.0], [10.0, 10.0, 0.0]])
    sum_acc = np.array([[9.0, 1.0, 0.0], [1.0, 9.0, 0.0]])
    sum_cost = np.array([[1.0, 10.0, 0.0], [1.0, 10.0, 0.0]]) * 1e-3
    emb, off = model_embedding(sum_acc, sum_cost, counts, cost_mu=-6.0, cost_sigma=2.0)
    assert emb.shape == (3, 2 + 2) and emb.dtype == np.float32
    assert emb[0, 0] > emb[1, 0] and emb[1, 1] > emb[0, 1]  # per-cluster accuracy
    assert emb[1, 3] > emb[0, 3]  # log mean cost: model 1 is the dearer one
    assert (emb[2] == 0).all()  # no rows: the mean model (and never chosen once saved)
    np.testing.assert_allclose(emb[:2].mean(0), 0, atol=1e-6)
    # offsets: logit of the logged accuracy (both 0.5 here) and standardised log mean cost
    np.testing.assert_allclose(off[:2, 0], 0, atol=1e-6)
    np.testing.assert_allclose(off[:2, 1], (np.log([1e-4, 1e-3]) + 6.0) / 2.0, rtol=1e-5)
    assert off[2, 1] == pytest.approx(off[:2, 1].mean(), rel=1e-5)
    with pytest.raises(ValueError, match="no logged rows"):
        model_embedding(sum_acc, sum_cost, np.zeros_like(counts))
    # the centralised / local version: same features from one matrix's own rows
    e, o = embedding_from_data(rows([0, 1, 2], n=60), 3, seed=0, cost_moments=(-9.0, 2.0))
    assert e.shape == (4, 3 + 2) and (e[3] == 0).all() and np.isfinite(e).all()
    assert o.shape == (4, 2) and np.isfinite(o).all()


def test_central_training_with_the_embedding_head_learns() -> None:
    data = rows([0, 1, 2, 3], n=200)
    r = train_mlp(data, replace(CFG, epochs=3), NetSpec("embedding", emb_k=4))
    out = r.predict(data.embeddings[:3])
    assert out.p_correct.shape == (3, 4) and np.isfinite(out.cost_usd).all()


def test_a_model_nobody_logged_gets_the_never_chosen_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The saved router must not score a model without a single training row by its untrained
    random head: it gets the documented never-chosen prior, kept through save and load."""
    from training.routers.base import load_router
    from training.routers.mlp import NEVER_CHOSEN_COST_USD, never_chosen

    router = tiny_router(NetSpec())
    X = np.random.default_rng(2).normal(size=(9, 384)).astype(np.float32)
    fixed = never_chosen(router, ["m2"])
    out, ref = fixed.predict(X), router.predict(X)
    assert (out.p_correct[:, 2] < 1e-12).all()
    np.testing.assert_allclose(out.cost_usd[:, 2], NEVER_CHOSEN_COST_USD, rtol=1e-4)
    keep = [0, 1, 3]
    np.testing.assert_array_equal(out.p_correct[:, keep], ref.p_correct[:, keep])
    assert fixed.unlogged == ["m2"] and router.unlogged == []  # the original is untouched
    loaded = load_router(fixed.save(tmp_path / "r.pt"))
    assert loaded.unlogged == ["m2"]
    np.testing.assert_array_equal(loaded.predict(X).p_correct, out.p_correct)
    with pytest.raises(KeyError):
        never_chosen(router, ["nope"])
    with pytest.raises(TypeError):
        never_chosen(tiny_router(NetSpec("shared", 3)), ["m1"])
    assert never_chosen(router, []) is router


def test_the_flower_app_config_is_every_field_at_its_default() -> None:
    """`flwr run` refuses a run-config key the app's pyproject does not declare, so a config
    field missing from ``[tool.flwr.app.config]`` breaks every deployment that passes it."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    defaults = FederationConfig().to_run_config()
    assert set(declared) == set(defaults)
    assert FederationConfig.from_run_config(declared).to_run_config() == defaults


def test_sgd_clients_leave_the_adamw_baselines_on_their_own_lrs() -> None:
    """With ``client-opt=sgd`` the run's lr is an SGD lr: the centralised and client-local
    routers (AdamW) keep their own candidates instead of trying AdamW at it."""
    from federation.grid import runs, with_settings
    from federation.simulate import CENTRAL_LRS, central_candidates

    base = runs()["rb_mlp_emb_s1"]
    sgd = with_settings(base, ["client-opt=sgd", "lr=0.3", "lrs=0.3,0.1"])
    assert (sgd.client_opt, sgd.lr_list) == ("sgd", [0.3, 0.1])
    assert sgd.baseline_lr == 1e-3 and base.baseline_lr == base.lr
    assert central_candidates(sgd)[0] == tuple(sorted(CENTRAL_LRS, reverse=True))
    with pytest.raises(ValueError, match="client-opt must be one of"):
        replace(base, client_opt="lion")
