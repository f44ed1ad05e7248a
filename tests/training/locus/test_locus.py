"""LOCUS smoke tests: tiny config, tiny synthetic matrix, tmp_path (STYLE 2.1.18)."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

import training.locus as locus
from training.locus import LocusConfig, LocusEmbedder, MFConfig, fit_model_embedding, train_mf
from training.locus.infer import score
from training.locus.model import LocusModel
from training.locus.synthetic import synthetic_matrix
from training.locus.train import lr_factor, noise_std, sample_episodes, train_locus

DIM = 16


def tiny_config(**overrides):
    base = {
        "input_dim": DIM,
        "d_model": 16,
        "num_latents": 4,
        "num_heads": 2,
        "num_isab": 2,
        "predictor_hidden": 8,
        "models_per_step": 4,
        "enc_set_min": 16,
        "enc_set_max": 48,
        "target_batch_size": 32,
        "warmup_steps": 5,
        "lr_encoder": 3e-3,
        "lr_decoder": 3e-3,
        "steps": 80,
        "eval_every": 80,
        "seed": 3,
    }
    base.update(overrides)
    return LocusConfig(**base)


@pytest.fixture(scope="module")
def matrix():
    return synthetic_matrix(num_models=10, num_queries=400, dim=DIM, num_unseen=2, seed=0)


@pytest.fixture(scope="module")
def trained(matrix, tmp_path_factory):
    path = tmp_path_factory.mktemp("locus") / "locus.pt"
    result = train_locus(matrix, tiny_config(), checkpoint_path=path, progress=False)
    return result, path


def random_set(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, (rng.random(n) < 0.5).astype(np.float32)


def test_exports_only_the_api():
    assert sorted(locus.__all__) == sorted(
        [
            "LocusConfig",
            "LocusEmbedder",
            "MFConfig",
            "MFResult",
            "TrainResult",
            "fit_model_embedding",
            "train_locus",
            "train_mf",
        ]
    )
    for name in locus.__all__:
        assert getattr(locus, name) is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"d_model": 30, "num_heads": 4},
        {"enc_set_min": 100, "enc_set_max": 10},
        {"dropout": 1.0},
        {"steps": 0},
        {"noise_std_end": -0.1},
        {"noise_anneal_frac": 0.0},
        {"val_split": "train"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        LocusConfig(**bad)


def test_every_config_field_has_help():
    from dataclasses import fields

    for cls in (LocusConfig, MFConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_noise_is_annealed_from_start_to_end():
    cfg = tiny_config(steps=100, noise_std_start=0.1, noise_std_end=0.05, noise_anneal_frac=0.5)
    assert noise_std(cfg, 0) == pytest.approx(0.1)
    assert noise_std(cfg, 25) == pytest.approx(0.075)
    assert noise_std(cfg, 50) == pytest.approx(0.05)
    assert noise_std(cfg, 99) == pytest.approx(0.05)


def test_loss_is_finite_and_decreases(trained):
    result, _ = trained
    loss = np.array(result.history.loss)
    assert len(loss) == 80
    assert np.isfinite(loss).all()
    assert loss[-20:].mean() < loss[:20].mean() - 0.02
    assert result.history.val and 0.0 <= result.metrics["val_acc"] <= 1.0


def test_every_trainable_parameter_changes(trained):
    result, _ = trained
    torch.manual_seed(tiny_config().seed)  # train_locus seeds the init the same way
    initial = LocusModel(tiny_config()).state_dict()
    for name, param in result.model.named_parameters():
        assert param.requires_grad
        assert not torch.equal(param.detach(), initial[name]), f"{name} did not change"


def test_training_is_reproducible(matrix):
    cfg = tiny_config(steps=10, eval_every=10)
    a = train_locus(matrix, cfg, progress=False)
    b = train_locus(matrix, cfg, progress=False)
    assert a.history.loss == b.history.loss
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name


def test_checkpoint_round_trips_bitwise(trained):
    result, path = trained
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["kind"] == "locus"
    assert ckpt["config"] == asdict(result.model.config)
    assert ckpt["step"] == result.best_step
    assert ckpt["metrics"] == result.metrics
    loaded = LocusEmbedder.from_checkpoint(path)
    assert loaded.config == result.model.config
    for name, value in result.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    X, y = random_set(50)
    live = result.embedder()
    z_live, z_loaded = live.embed(X, y), loaded.embed(X, y)
    assert np.array_equal(z_live, z_loaded)
    Z = np.stack([z_live, -z_live])
    assert np.array_equal(live.predict(Z, X), loaded.predict(Z, X))
    again = tmp = path.with_name("again.pt")
    loaded.save(tmp)
    assert np.array_equal(LocusEmbedder.from_checkpoint(again).embed(X, y), z_live)


def test_from_checkpoint_rejects_other_kinds(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"kind": "mf"}, path)
    with pytest.raises(ValueError, match="not a LOCUS checkpoint"):
        LocusEmbedder.from_checkpoint(path)


def test_embedding_is_bitwise_deterministic(trained):
    result, _ = trained
    emb = result.embedder()
    X, y = random_set(300, seed=1)
    z = emb.embed(X, y)
    assert z.shape == (16,) and z.dtype == np.float32
    for _ in range(3):
        assert np.array_equal(emb.embed(X, y), z)  # bitwise: same shapes, same kernels
    assert np.array_equal(emb.embed_many([(X, y), (X, y)]), np.stack([z, z]))


def test_embedding_is_permutation_invariant(trained):
    result, _ = trained
    emb = result.embedder()
    X, y = random_set(300, seed=2)
    perm = np.random.default_rng(0).permutation(300)
    # allclose, not bitwise: attention sums the set in a different order after a permutation.
    np.testing.assert_allclose(emb.embed(X[perm], y[perm]), emb.embed(X, y), rtol=0, atol=1e-5)


def test_embedding_accepts_any_set_size(trained):
    result, _ = trained
    emb = result.embedder()
    for n in (1, 7, 5000):
        z = emb.embed(*random_set(n, seed=n))
        assert z.shape == (16,) and np.isfinite(z).all()
    with pytest.raises(ValueError):
        emb.embed(np.zeros((0, DIM)), np.zeros(0))
    X, y = random_set(4)
    with pytest.raises(ValueError):
        emb.embed(X, np.array([0, 1, np.nan, 1]))


def test_padding_does_not_change_embeddings(trained):
    result, _ = trained
    encoder = result.model.eval().encoder
    (Xa, ya), (Xb, yb) = random_set(40, seed=3), random_set(13, seed=4)
    x = torch.zeros(2, 40, DIM)
    y = torch.zeros(2, 40)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    x[0], y[0], mask[0] = torch.from_numpy(Xa), torch.from_numpy(ya), True
    x[1, :13], y[1, :13], mask[1, :13] = torch.from_numpy(Xb), torch.from_numpy(yb), True
    x[1, 13:] = 123.0  # junk in the padded slots must not leak
    with torch.no_grad():
        batched = encoder(x, y, mask)
        alone_a = encoder(torch.from_numpy(Xa)[None], torch.from_numpy(ya)[None])
        alone_b = encoder(torch.from_numpy(Xb)[None], torch.from_numpy(yb)[None])
    # allclose: different tensor shapes may take different (equally valid) kernel paths.
    torch.testing.assert_close(batched[0], alone_a[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(batched[1], alone_b[0], rtol=0, atol=1e-5)


def test_fast_scoring_matches_the_predictor(trained):
    result, _ = trained
    predictor = result.model.eval().predictor
    Z = torch.randn(5, 16)
    X = torch.from_numpy(random_set(1100, seed=5)[0])  # crosses the scoring block size
    with torch.no_grad():
        naive = predictor(Z[None], X[:, None])  # [B, M]
    torch.testing.assert_close(score(predictor, Z, X), naive, rtol=1e-5, atol=1e-5)


def test_encoder_and_target_sets_are_disjoint():
    rng = np.random.default_rng(0)
    observed = [np.arange(0, 200, 2), np.arange(50), np.array([3, 9])]
    for enc_size in (1, 30, 80, 500):
        episodes = sample_episodes(
            rng, observed, np.array([0, 1, 2, 0]), enc_size=enc_size, target_size=32
        )
        for ep in episodes:
            enc, dec = set(ep.enc_rows.tolist()), set(ep.dec_rows.tolist())
            assert enc and dec
            assert not enc & dec
            assert len(enc) == len(ep.enc_rows) and len(dec) == len(ep.dec_rows)
            assert enc | dec <= set(observed[ep.model].tolist())
            assert len(enc) <= enc_size and len(dec) <= 32


def test_training_handles_missing_cells():
    m = synthetic_matrix(num_models=6, num_queries=300, dim=DIM, missing_frac=0.3, seed=1)
    result = train_locus(m, tiny_config(steps=6, eval_every=3), progress=False)
    assert np.isfinite(result.history.loss).all()
    assert len(result.history.val) == 2


def test_mf_trains_and_fits_a_new_model(matrix):
    cfg = MFConfig(
        input_dim=DIM, d_model=16, predictor_hidden=8, batch_size=256, steps=150, eval_every=50
    )
    mf = train_mf(matrix, cfg, progress=False)
    assert mf.embeddings.shape == (8, 16)
    assert mf.models == matrix.meta["seen_models"]
    losses = [h["loss"] for h in mf.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]

    new = matrix.meta["unseen_models"][0]
    train = matrix.for_split("train").select_models([new])
    test = matrix.for_split("test").select_models([new])
    X, y = train.embeddings[:128], train.scores[:128, 0]
    init = mf.embeddings.mean(0)
    z = fit_model_embedding(mf.predictor, X, y, init=init)
    assert z.shape == (16,) and np.isfinite(z).all()
    assert np.array_equal(z, fit_model_embedding(mf.predictor, X, y, init=init))
    assert all(p.requires_grad for p in mf.predictor.parameters())  # unfrozen again

    def acc(zz, XX, yy):
        return float(np.mean((mf.predict(XX, zz[None])[:, 0] >= 0.5) == (yy >= 0.5)))

    assert acc(z, X, y) > acc(init, X, y)  # the fit explains its own evaluations better
    assert acc(z, test.embeddings, test.scores[:, 0]) > 0.6  # and generalises


def test_lr_warms_up_then_decays_to_the_final_fraction():
    cfg = tiny_config(steps=100, warmup_steps=10, lr_final_frac=0.1)
    factors = [lr_factor(cfg, s) for s in range(100)]
    assert factors[0] < factors[5] < factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert lr_factor(cfg, 100) == pytest.approx(0.1)


def test_ema_weights_are_validated_and_kept(matrix):
    cfg = tiny_config(steps=12, eval_every=12, ema_decay=0.9)
    result = train_locus(matrix, cfg, progress=False)
    torch.manual_seed(cfg.seed)
    initial = LocusModel(cfg).state_dict()
    raw = train_locus(matrix, tiny_config(steps=12, eval_every=12), progress=False)
    assert result.history.loss == raw.history.loss  # averaging does not touch the optimiser
    for name, param in result.model.state_dict().items():
        assert not torch.equal(param, initial[name]), name
        assert not torch.equal(param, raw.model.state_dict()[name]), name


def test_onboarding_draws_are_random_not_the_first_rows() -> None:
    """experiment._first_k used to take a prefix of rows sorted by question id (one category)."""
    from training.data import load_matrix
    from training.locus.experiment import _first_k

    train = load_matrix("routerbench").for_split("train")
    X, _ = _first_k(train, 0, 128)
    X2, _ = _first_k(train, 0, 128)
    assert np.array_equal(X, X2)  # seeded
    prefix = train.embeddings[np.flatnonzero(train.observed[:, 0])[:128]]
    assert not np.array_equal(X, prefix)
