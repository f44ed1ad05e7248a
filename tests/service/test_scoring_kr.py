"""The gateway's scorer computes LOCUS-KR exactly as the benchmark does, from stored evaluations."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from service.catalog import ModelSpec
from service.routing.registry import Backend, Pool, PoolEntry
from service.routing.scoring import LocusScorer
from tests.service.helpers import make_settings, run_gateway
from training.locus import LocusConfig, LocusEmbedder
from training.locus.model import LocusModel
from training.routers import locus_kr
from training.routers.locus_kr import (
    Evidence,
    KRParams,
    StackedEvidence,
    kr_predict,
    kr_predict_stacked,
    penalise,
    unit,
)

PARAMS = KRParams(k=10, beta=10.0, alpha=0.1, alpha_g=20.0, margin=0.0)


def _embedder(routing: dict[str, object]) -> LocusEmbedder:
    torch.manual_seed(0)
    cfg = LocusConfig(d_model=16, num_latents=4, num_heads=2, predictor_hidden=16)
    return LocusEmbedder(LocusModel(cfg), routing=routing)


def _clusters(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters of query embeddings around two random directions."""
    centres = unit(rng.normal(size=(2, 384)).astype(np.float32))
    X = np.concatenate([centres[0] + 0.05 * rng.normal(size=(40, 384)),
                        centres[1] + 0.05 * rng.normal(size=(40, 384))])  # fmt: skip
    return unit(X.astype(np.float32)), centres


def _pool(emb: LocusEmbedder, X: np.ndarray, y_a: np.ndarray, y_b: np.ndarray) -> Pool:
    entries = []
    for name, y in (("a", y_a), ("b", y_b)):
        entries.append(
            PoolEntry(
                name=name, backend=Backend(kind="replay"), input_per_mtok=1.0,
                output_per_mtok=1.0, embedding=emb.embed(X, y), num_evaluations=len(y),
                mean_prompt_tokens=0.0, mean_completion_tokens=0.0, created=0,
                evidence_X=X.astype(np.float16), evidence_y=y.astype(np.float32),
            )
        )  # fmt: skip
    return Pool.build(1, entries)


def test_scorer_is_the_benchmarks_locus_kr_and_follows_each_models_evidence() -> None:
    rng = np.random.default_rng(0)
    X, centres = _clusters(rng)
    y_a = np.r_[np.ones(40), np.zeros(40)].astype(np.float32)  # a: right on cluster 0 only
    y_b = np.r_[np.zeros(40), np.ones(40)].astype(np.float32)  # b: right on cluster 1 only
    plain = LocusScorer(_embedder({}))
    emb = _embedder({"method": "locus_kr", "params": PARAMS.to_json()})
    scorer = LocusScorer(emb)
    pool = _pool(emb, X, y_a, y_b)
    p_plain = plain.p_correct(pool, ["a", "b"], centres)
    assert np.allclose(p_plain, emb.predict(pool.embeddings(["a", "b"]), centres))
    p = scorer.p_correct(pool, ["a", "b"], centres)
    assert p[0, 0] > p[0, 1] and p[1, 1] > p[1, 0]  # each model wins where its evidence is right
    # the same numbers as the training-side functions the benchmark calls
    prior = emb.predict(pool.embeddings(["a", "b"]), centres)
    want = np.stack(
        [
            kr_predict(
                Evidence.build(X, y, emb.predict(pool.embeddings([n]), X)[:, 0]), prior[:, i],
                PARAMS, X=centres,
            )
            for i, (n, y) in enumerate((("a", y_a), ("b", y_b)))
        ],
        1,
    )  # fmt: skip
    assert np.allclose(p, penalise(want, [y_a.mean(), y_b.mean()], PARAMS.margin), atol=1e-5)
    # a candidate list is a view of the pool's one stack: any order or subset, the same columns
    assert np.allclose(scorer.p_correct(pool, ["b", "a"], centres), p[:, ::-1], atol=1e-6)
    assert np.allclose(scorer.p_correct(pool, ["b"], centres)[:, 0], want[:, 1], atol=1e-6)
    assert scorer.stacked(pool, ["b"])[0].X is scorer.stacked(pool, ["a", "b"])[0].X


@pytest.mark.parametrize("cells", [locus_kr.STACK_CELLS, 500])
def test_the_vectorised_pass_is_locus_kr_model_by_model(monkeypatch, cells) -> None:
    """Two models on the same queries, groups shorter and longer than k, a model without
    evidence: every column equals ``kr_predict`` on its own evidence (the prior where it has
    none), whether the queries go in one chunk or many."""
    monkeypatch.setattr(locus_kr, "STACK_CELLS", cells)
    rng = np.random.default_rng(5)

    def ev(n: int, X: np.ndarray | None = None) -> Evidence:
        X = unit(rng.normal(size=(n, 384)).astype(np.float32)) if X is None else X
        y = (rng.random(n) < 0.6).astype(np.float32)
        return Evidence.build(X, y, rng.uniform(0.2, 0.8, n).astype(np.float32))

    shared = unit(rng.normal(size=(30, 384)).astype(np.float32))
    evs = [ev(30, shared), ev(30, shared), ev(7), ev(50), None]
    keys = [b"shared", b"shared", b"seven", b"fifty", None]
    columns = [None if e is None else (k, e) for k, e in zip(keys, evs, strict=True)]
    X = unit(rng.normal(size=(40, 384)).astype(np.float32))
    X[:5] = shared[:5] + 0.01  # some queries right on the shared evidence
    X = unit(X)
    prior = rng.uniform(0.0, 1.0, size=(40, 5)).astype(np.float32)
    st = StackedEvidence.build(columns, PARAMS.alpha_g)
    assert st.X.shape == (3, 50, 384) and st.group.tolist() == [0, 0, 1, 2, -1]
    got = kr_predict_stacked(st, prior, PARAMS, X)
    want = np.stack(
        [prior[:, c] if e is None else kr_predict(e, prior[:, c], PARAMS, X=X)
         for c, e in enumerate(evs)],
        1,
    )  # fmt: skip
    assert np.allclose(got, want, atol=1e-6, rtol=0)
    assert not np.allclose(got[:, :4], np.clip(prior[:, :4] + st.offset[:4], 0.01, 0.99))


def test_a_large_margin_keeps_the_best_supported_model() -> None:
    rng = np.random.default_rng(1)
    X, centres = _clusters(rng)
    y_a = np.r_[np.ones(40), np.ones(20), np.zeros(20)].astype(np.float32)  # mean 0.75
    y_b = np.r_[np.zeros(40), np.ones(40)].astype(np.float32)  # mean 0.5, better on cluster 1
    params = KRParams(k=10, beta=10.0, alpha=0.1, alpha_g=20.0, margin=1.0)
    emb = _embedder({"method": "locus_kr", "params": params.to_json()})
    p = LocusScorer(emb).p_correct(_pool(emb, X, y_a, y_b), ["a", "b"], centres)
    assert (p.argmax(1) == 0).all()


def test_registered_and_shipped_models_carry_their_evaluations_into_the_pool(
    tmp_path, fake_a
) -> None:
    with run_gateway(make_settings(tmp_path)) as gw:
        assert gw.register("reg", fake_a.url, scores=(1, 0, 1, 1)).status_code == 201
        X = unit(np.random.default_rng(2).normal(size=(6, 384)).astype(np.float32))
        y = np.array([1, 1, 0, 1, 0, 1], dtype=np.float32)
        spec = ModelSpec("shipped", "openai", fake_a.url, "backend-a", None, 1.0, 1.0)
        fut = asyncio.run_coroutine_threadsafe(
            gw.c.catalog.register_embedded(
                spec, embedding=np.array([0.5], np.float32), num_evaluations=6,
                mean_prompt_tokens=0, mean_completion_tokens=0, evidence=(X, y),
            ),
            gw.server_loop(),
        )  # fmt: skip
        assert fut.result(10) is True
        pool = gw.c.engine.pool
        reg, shipped = pool.get("reg"), pool.get("shipped")
        assert reg is not None and shipped is not None
        assert reg.evidence_y is not None and sorted(reg.evidence_y.tolist()) == [0, 1, 1, 1]
        assert shipped.evidence_X is not None and shipped.evidence_X.shape == (6, 384)
        # newest first: the rows come back in reverse insertion order
        assert np.allclose(shipped.evidence_X.astype(np.float32), X[::-1], atol=1e-3)
        assert shipped.evidence_y.tolist() == y[::-1].tolist()
        assert shipped.evidence_mean == float(y.mean())


def test_the_shipped_bundle_is_served_with_locus_kr(tmp_path, monkeypatch) -> None:
    """The real default bundle: its pool comes up with its evaluations and the LOCUS-KR scorer."""
    from training.bundle import DEFAULT_BUNDLE, load_bundle

    bundle = load_bundle(DEFAULT_BUNDLE)
    settings = make_settings(tmp_path, load_default_bundle=True, bundle_path=DEFAULT_BUNDLE)
    with run_gateway(settings, locus=bundle.locus) as gw:
        scorer = gw.c.engine.scorers["locus"]
        assert isinstance(scorer, LocusScorer) and scorer.kr is not None
        pool = gw.c.engine.pool
        for m in bundle.models:
            entry = pool.get(m.name)
            ev = bundle.evidence(m.name)
            assert entry is not None and entry.evidence_y is not None and ev is not None
            assert len(entry.evidence_y) == len(ev[1])
        X = unit(np.random.default_rng(3).normal(size=(5, 384)).astype(np.float32))
        # the served pool's evidence was built when the pool was loaded, not by this decision
        monkeypatch.setattr(StackedEvidence, "build", _refuse)
        p = scorer.p_correct(pool, bundle.names, X)
        assert p.shape == (5, len(bundle.names)) and np.isfinite(p).all()


def _refuse(*_: object, **__: object) -> None:
    raise AssertionError("the pool's evidence was stacked on the request path")


def test_prepare_builds_the_evidence_before_the_first_decision(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    X, centres = _clusters(rng)
    emb = _embedder({"method": "locus_kr", "params": PARAMS.to_json()})
    pool = _pool(emb, X, (rng.random(80) < 0.5).astype(np.float32), np.ones(80, np.float32))
    want = LocusScorer(emb).p_correct(pool, ["b", "a"], centres)
    scorer = LocusScorer(emb)
    scorer.prepare(pool)
    monkeypatch.setattr(StackedEvidence, "build", _refuse)
    assert np.array_equal(scorer.p_correct(pool, ["b", "a"], centres), want)
    with pytest.raises(AssertionError, match="request path"):  # a new pool is stacked anew
        scorer.p_correct(Pool.build(2, list(pool.entries)), ["a"], centres)


def test_a_new_bundle_refreshes_its_models_stored_by_older_weights(tmp_path, fake_a) -> None:
    """A database seeded by an older bundle (no stored evaluations, other LOCUS weights) takes the
    new bundle's embedding and evaluations instead of keeping the model disabled as stale."""
    from tests.service.test_stale_embeddings import ShiftedLocus

    settings = make_settings(tmp_path)
    spec = ModelSpec("shipped", "openai", fake_a.url, "backend-a", None, 1.0, 1.0,
                     meta={"source": "bundle"})  # fmt: skip
    X = unit(np.random.default_rng(4).normal(size=(6, 384)).astype(np.float32))
    y = np.array([1, 0, 0, 1, 0, 1], dtype=np.float32)

    def seed(gw, evidence):  # type: ignore[no-untyped-def]
        fut = asyncio.run_coroutine_threadsafe(
            gw.c.catalog.register_embedded(
                spec, embedding=np.array([0.5], np.float32), num_evaluations=6,
                mean_prompt_tokens=0, mean_completion_tokens=0, evidence=evidence,
            ),
            gw.server_loop(),
        )  # fmt: skip
        return fut.result(10)

    with run_gateway(settings) as gw:
        assert seed(gw, None) is True
        assert seed(gw, None) is False  # same weights: nothing to refresh
    with run_gateway(settings, locus=ShiftedLocus()) as gw:
        assert gw.admin("GET", "/admin/models/shipped").json()["enabled"] is False  # stale
        assert seed(gw, (X, y)) is True
        body = gw.admin("GET", "/admin/models/shipped").json()
        assert body["enabled"] is True
        entry = gw.c.engine.pool.get("shipped")
        assert entry is not None and entry.evidence_y is not None and len(entry.evidence_y) == 6
