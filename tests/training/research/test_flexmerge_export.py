"""flexmerge's GGUF export and merged variants: names, the q/k permutation, a byte-identical
unmodified copy, and an exported merged variant that transformers loads back to the merged
model's logits (the CPU model server reads the same file)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from training.research.flexmerge.config import FlexMergeConfig
from training.research.flexmerge.export import (
    export_gguf,
    field_value,
    gguf_tensor_name,
    permute_rows,
    read_tensor,
)
from training.research.flexmerge.variants import exact_match, first_word

gguf = pytest.importorskip("gguf")


def _smollm2_gguf() -> Path:
    from training.data.tokens import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except RuntimeError as e:
        pytest.skip(str(e))


def test_tensor_names():
    assert gguf_tensor_name("model.layers.3.self_attn.v_proj.weight") == "blk.3.attn_v.weight"
    assert gguf_tensor_name("model.layers.29.mlp.down_proj.weight") == "blk.29.ffn_down.weight"
    assert gguf_tensor_name("model.layers.0.self_attn.o_proj.weight") == "blk.0.attn_output.weight"
    assert gguf_tensor_name("model.embed_tokens.weight") == "token_embd.weight"
    with pytest.raises(KeyError):
        gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq")


def test_permutation_is_the_inverse_of_transformers_unpermutation():
    """What transformers does to q/k rows when it loads a llama GGUF, undone by permute_rows."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    proc = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    rng = np.random.default_rng(0)
    for name, rows, heads in (("blk.0.attn_q.weight", 576, 9), ("blk.0.attn_k.weight", 192, 3)):
        w = rng.standard_normal((rows, 8)).astype(np.float32)
        loaded = proc.process(permute_rows(w, heads), name).weights
        assert np.array_equal(loaded, w)
        assert not np.array_equal(permute_rows(w, heads), w)


def test_exact_match_reads_the_first_word():
    assert exact_match("Yes.", "yes") and exact_match(" no, it is not", "no")
    assert not exact_match("Yesterday", "yes") and not exact_match("", "no")
    assert first_word("  NO!") == "no"


@pytest.mark.slow
def test_unmodified_export_is_a_byte_identical_copy(tmp_path):
    src = _smollm2_gguf()
    info = export_gguf(src, tmp_path / "copy.gguf", {})
    assert info["replaced"] == {}
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(tmp_path / "copy.gguf"))
    keys = [k for k in a.fields if not k.startswith("GGUF.")]
    assert keys == [k for k in b.fields if not k.startswith("GGUF.")]
    assert all(field_value(a.fields[k]) == field_value(b.fields[k]) for k in keys)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.tensor_type == tb.tensor_type and np.array_equal(ta.data, tb.data), ta.name


@pytest.mark.slow
def test_changed_tensors_hold_base_plus_update_in_the_file_layout(tmp_path):
    src = _smollm2_gguf()
    rng = np.random.default_rng(1)
    dv = rng.standard_normal((192, 576)).astype(np.float32) * 0.01
    dq = rng.standard_normal((576, 576)).astype(np.float32) * 0.01
    deltas = {"model.layers.2.self_attn.v_proj.weight": dv,
              "model.layers.2.self_attn.q_proj.weight": dq}  # fmt: skip
    info = export_gguf(src, tmp_path / "v.gguf", deltas, changed_type="f32")
    assert set(info["replaced"]) == {"blk.2.attn_v.weight", "blk.2.attn_q.weight"}
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert np.array_equal(read_tensor(b, "blk.2.attn_v.weight"),
                          read_tensor(a, "blk.2.attn_v.weight") + dv)  # fmt: skip
    assert np.array_equal(read_tensor(b, "blk.2.attn_q.weight"),
                          read_tensor(a, "blk.2.attn_q.weight") + permute_rows(dq, 9))  # fmt: skip
    assert next(t for t in b.tensors if t.name == "blk.2.attn_q.weight").tensor_type.name == "F32"
    assert np.array_equal(read_tensor(b, "blk.3.attn_v.weight"),
                          read_tensor(a, "blk.3.attn_v.weight"))  # fmt: skip
    # re-quantised to the source type (Q4_1) instead: same type, and the update is mostly lost
    export_gguf(src, tmp_path / "q.gguf", deltas, changed_type="source")
    c = gguf.GGUFReader(str(tmp_path / "q.gguf"))
    t_v = next(t for t in c.tensors if t.name == "blk.2.attn_v.weight")
    assert t_v.tensor_type == next(t for t in a.tensors if t.name == t_v.name).tensor_type


def make_tiny_run(folder: Path, tasks: str = "big,color", *, scale: float = 0.5) -> Path:
    """A stand-in for a ``flexmerge --llm`` run: its report.json config and one LoRA adapter per
    task on the last 2 layers with seeded random B (the merge and export do not care how the
    updates were learned; the real run fine-tunes them)."""
    from training.research.smollm import adapter_arrays, add_lora, load_smollm2, num_layers

    cfg = FlexMergeConfig(llm=True, digits=False, llm_tasks=tasks, lora_r=2, lora_layers=2)
    (folder / "adapters").mkdir(parents=True, exist_ok=True)
    for t_i, task in enumerate(cfg.task_list()):
        model, _ = load_smollm2()
        n = num_layers(model)
        peft = add_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r,
                        layers=list(range(n - cfg.lora_layers, n)),
                        targets=cfg.lora_targets.split(","), seed=t_i)  # fmt: skip
        g = torch.Generator().manual_seed(100 + t_i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.copy_(scale * torch.randn(p.shape, generator=g))
        np.savez(folder / "adapters" / f"{task}.npz", **adapter_arrays(peft))  # type: ignore[arg-type]
    (folder / "report.json").write_text(json.dumps({"config": asdict(cfg)}))
    return folder


@pytest.mark.slow
def test_build_variants_measures_every_size_and_exports_a_faithful_gguf(tmp_path):
    from training.research.flexmerge.variants import build_variants

    run = make_tiny_run(tmp_path / "run")
    m = build_variants(run, tmp_path / "variants", method="ties", export_sizes=[1],
                       eval_per_task=2)  # fmt: skip
    assert [s["size"] for s in m["sizes"]] == [2.0, 1.0]
    assert [len(s["variants"]) for s in m["sizes"]] == [2, 1]
    one = [v for v in m["variants"] if v["size"] == 1.0]
    assert len(one) == 1 and one[0]["tasks"] == ["big", "color"]
    assert len(one[0]["evaluations"]) == 4
    assert all(r["score"] in (0.0, 1.0) and r["prompt_tokens"] > 0 for r in one[0]["evaluations"])
    assert one[0]["export"]["replaced"] == 6  # v, o, down of 2 layers
    assert one[0]["export"]["max_abs_logit_gap"] < 1e-3
    assert (tmp_path / "variants" / one[0]["gguf"]).exists()
    assert all("gguf" not in v for v in m["variants"] if v["size"] == 2.0)
