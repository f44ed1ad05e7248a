"""ravan: the layer, exact aggregation, equal uploads, and the quick path on tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from training.research.federated import weighted_mean
from training.research.jobs import run_job
from training.research.ravan.adapters import AdapterSpec, attach, target_dims, uploads
from training.research.ravan.config import RavanConfig
from training.research.ravan.digits import TARGETS, _mlp, dirichlet_split
from training.research.ravan.exactness import aggregation_errors
from training.research.ravan.layers import (
    RavanLinear,
    inject_ravan,
    load_ravan,
    ravan_bases,
    ravan_delta,
    ravan_uploads,
)


def test_layer_starts_at_the_base_and_adds_its_delta():
    torch.manual_seed(0)
    base = nn.Linear(12, 8)
    layer = RavanLinear(base, heads=3, rank=2, seed=1)
    x = torch.randn(5, 12)
    torch.testing.assert_close(layer(x), base(x))  # H = 0
    with torch.no_grad():
        layer.H.normal_()
        layer.s.copy_(torch.tensor([0.5, 2.0, -1.0]))
    torch.testing.assert_close(layer(x), base(x) + x @ layer.delta().T)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["H", "s"]


def test_bases_are_orthonormal_and_disjoint_across_heads():
    b, a = ravan_bases(16, 12, heads=3, rank=4, seed=0)
    cols = np.concatenate(list(b), axis=1)  # (16, 12): all heads' columns
    np.testing.assert_allclose(cols.T @ cols, np.eye(12), atol=1e-5)
    rows = np.concatenate(list(a), axis=0)  # (12, 12)
    np.testing.assert_allclose(rows @ rows.T, np.eye(12), atol=1e-5)
    b2, _ = ravan_bases(16, 12, heads=3, rank=4, seed=0)
    np.testing.assert_array_equal(b, b2)  # shared by every client


def test_averaging_sH_reproduces_the_mean_client_update_exactly():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 9))
    inject_ravan(model, targets=("0",), heads=4, rank=2, seed=3)
    layer = model[0]
    b, a = layer.B.numpy(), layer.A.numpy()
    replies, deltas, weights = [], [], [3.0, 1.0, 2.0]
    for w in weights:
        with torch.no_grad():
            layer.H.copy_(torch.from_numpy(rng.standard_normal((4, 2, 2)).astype(np.float32)))
            layer.s.copy_(torch.from_numpy(rng.standard_normal(4).astype(np.float32)))
        deltas.append(layer.delta().detach().numpy().astype(np.float64))
        replies.append((ravan_uploads(model), w))
    target = sum(w * d for w, d in zip(weights, deltas, strict=True)) / sum(weights)
    agg = weighted_mean(replies)
    load_ravan(model, agg)
    assert torch.all(layer.s == 1)
    np.testing.assert_allclose(layer.delta().detach().numpy(), target, atol=1e-5)
    np.testing.assert_allclose(ravan_delta(b, a, agg["0.sH"]), target, atol=1e-5)


def test_real_clients_aggregate_exactly_for_ravan_but_not_for_lora():
    err = aggregation_errors(seed=0, clients=3)
    assert err["ravan"] < 1e-5 and err["ffa"] < 1e-5  # FFA: A shared and frozen, so exact too
    assert err["lora"] > 1e-3


def test_uploads_are_matched_and_counted_as_sent():
    dims = target_dims(_mlp(), TARGETS)
    specs = {
        m: AdapterSpec.matched(m, dims, lora_rank=4, heads=4) for m in ("lora", "ffa", "ravan")
    }
    lora = specs["lora"].upload_per_layer()
    for m, spec in specs.items():
        per_layer = spec.upload_per_layer()
        assert all(per_layer[t] <= lora[t] for t in dims)  # never more than LoRA
        model = attach(_mlp(), spec, seed=0)
        sent = uploads(model, spec)
        assert sum(v.size for v in sent.values()) == sum(per_layer.values()), m
    assert specs["ravan"].ranks == {"fc1": 13, "fc2": 16, "fc3": 10}
    assert sum(specs["ffa"].upload_per_layer().values()) >= 0.95 * sum(lora.values())


def test_injects_into_a_transformer_like_peft_does():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg)
    ids = torch.tensor([[1, 5, 7, 9]])
    before = lm(ids).logits
    names = inject_ravan(lm, targets=("q_proj", "v_proj"), heads=2, rank=4, seed=0, layers=[2])
    assert names == ["model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj"]
    torch.testing.assert_close(lm(ids).logits, before)
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert len(trainable) == 4 and all(n.endswith((".H", ".s")) for n in trainable)
    lm(ids).logits.sum().backward()
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)


def test_dirichlet_split_skews_labels_more_at_small_alpha():
    labels = np.repeat(np.arange(10), 40)

    def purity(alpha):
        parts = dirichlet_split(labels, 10, alpha, np.random.default_rng(0))
        assert sorted(np.concatenate(parts).tolist()) == list(range(400))  # a partition
        return np.mean([np.bincount(labels[p]).max() / len(p) for p in parts])

    assert purity(0.1) > purity(1.0) > purity(None)


@pytest.mark.slow
def test_quick_path_writes_the_report(tmp_path):
    cfg = RavanConfig(clients=4, rounds=2, lrs="0.01", alphas="iid,0.1", pretrain_epochs=20)
    run_job("ravan", cfg, tmp_path, seeds=1, quick=False, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["id"] for c in report["claims"]} == {
        "ravan_beats_lora", "gap_grows_with_heterogeneity", "ravan_beats_ffa", "exact_aggregation",
    }  # fmt: skip
    assert (
        report["results"]["uploads"]["ravan"]["total"]
        <= report["results"]["uploads"]["lora"]["total"]
    )
    assert len(report["results"]["accuracy"]["ravan"]["0.1"]) == 1
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def _smollm2_or_skip() -> None:
    pytest.importorskip("gguf")
    from training.data.tokens import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except RuntimeError as e:
        pytest.skip(str(e))


def _tiny_llm_cfg(**kw):
    kw = {"llm_rounds": 1, "llm_local_steps": 1, "llm_batch": 2, "llm_per_client": 4,
          "llm_clients": 2, "llm_eval": 2, "llm_layers": 1, **kw}  # fmt: skip
    return RavanConfig(digits=False, llm=True, llm_skews="iid,0.9", llm_flower_runs=0, **kw)


def test_llm_clients_are_mostly_one_task_when_skewed():
    from training.research.ravan.llm import client_questions, llm_config

    cfg = RavanConfig(llm=True, llm_clients=4, llm_per_client=20)

    def primary_share(skew):
        data = client_questions(llm_config(cfg, seed=0, method="ravan", skew=skew))
        assert [len(d) for d in data] == [20] * 4
        tasks = cfg.llm_task_list()
        return [sum(q.task == tasks[k % 4] for q in d) / 20 for k, d in enumerate(data)]

    assert primary_share(0.9) == [0.9] * 4
    assert primary_share(None) == [0.25] * 4


@pytest.mark.slow
def test_llm_cached_top_layers_equal_the_plain_forward():
    _smollm2_or_skip()
    from training.research.flexmerge.llm import questions
    from training.research.ravan.layers import ravan_modules
    from training.research.ravan.llm import (
        _encoded,
        _top_logits,
        adapted_layers,
        adapted_model,
        full_model_logits,
        llm_config,
    )

    cfg = llm_config(_tiny_llm_cfg(llm_layers=2), seed=0, method="ravan", skew=None)
    model, _ = adapted_model(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero update, so the adapted layers matter
        for m in ravan_modules(model).values():
            m.H.normal_(std=0.05)
    qs = questions("animal", 3, seed=0, split="test") + questions("big", 2, seed=0, split="test")
    first = adapted_layers(cfg)[0]
    rows = [[_encoded(q.text, q.answer)[1] - 1] for q in qs]
    with torch.no_grad():
        cached = _top_logits(model, qs, first, rows)
    for i, q in enumerate(qs):
        torch.testing.assert_close(cached[i], full_model_logits(model, q), atol=1e-3, rtol=1e-4)
    adapted_model(cfg)  # reset the cached model to its initial adapters


@pytest.mark.slow
def test_llm_path_uploads_match_aggregates_exactly_and_reports_the_claims(tmp_path):
    _smollm2_or_skip()
    from training.research.federated import weighted_mean
    from training.research.ravan.adapters import initial_uploads
    from training.research.ravan.layers import ravan_modules
    from training.research.ravan.llm import adapted_model, llm_config, local_llm

    cfg = _tiny_llm_cfg()
    # Ravan's server aggregate is the mean of the client updates, on the real SmolLM2 layers
    conf = llm_config(cfg, seed=0, method="ravan", skew=0.9)
    model, spec = adapted_model(conf)
    replies = local_llm(conf, [0, 1], initial_uploads(model, spec), {"round": 0})
    weights = [w for _, w in replies]
    client_deltas = []
    for arrays, _ in replies:
        m, _ = adapted_model(conf, arrays)
        client_deltas.append({n: x.delta().detach().double() for n, x in ravan_modules(m).items()})
    assert all(float(d.abs().max()) > 0 for d in client_deltas[0].values())  # clients trained
    m, _ = adapted_model(conf, weighted_mean(replies))
    assert all(bool(torch.all(x.s == 1)) for x in ravan_modules(m).values())
    for n, x in ravan_modules(m).items():
        target = sum(w * d[n] for w, d in zip(weights, client_deltas, strict=True)) / sum(weights)
        np.testing.assert_allclose(x.delta().detach().double(), target, atol=1e-6, rtol=1e-4)

    run_job("ravan", cfg, tmp_path, seeds=1, quick=False, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    claims = {c["id"]: c for c in report["claims"]}
    assert set(claims) == {
        "ravan_beats_lora_smollm2", "gap_grows_with_heterogeneity_smollm2",
        "ravan_beats_ffa_smollm2", "exact_aggregation_smollm2",
    }  # fmt: skip
    res = report["results"]["smollm2"]
    up = res["uploads"]  # parameters actually sent: matched within 5%, Ravan never more
    assert up["ravan"] <= up["lora"] and up["ffa"] <= up["lora"]
    assert min(up.values()) >= 0.95 * up["lora"]
    assert up["lora"] == 4 * (576 + 192) + 4 * (576 + 576) + 4 * (1536 + 576)  # r=4, one layer
    assert res["exactness"]["ravan"] < 1e-5 and res["exactness"]["lora"] > 1e-3
    assert claims["exact_aggregation_smollm2"]["holds"]
    assert len(res["accuracy"]["ravan"]["0.9"]) == 1
    assert all(0.0 <= a <= 1.0 for m in res["accuracy"].values() for v in m.values() for a in v)
    assert (tmp_path / "smollm2_accuracy.png").stat().st_size > 0
