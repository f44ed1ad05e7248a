"""Merged SmolLM2 variants as deployable models: built from a ``flexmerge --llm`` run's adapters,
measured on a query set with exact-match answers, exported as GGUF files for the CPU model server.

A FlexMerge state at size ``s`` deploys one model per *variant*: the tasks that share every
block's vector (:meth:`FlexMerge.variants`). At 1 x there is one variant serving every task; at
M x each task has its own fine-tuned model. For every integer size from M down to 1 the variants
are measured on the query set (``eval_per_task`` held-out questions of every task, asked as the
gateway's clients ask them: a system turn and the question, greedy, a few tokens); a reply scores
1 when its first word is the right ``yes``/``no``. Those rows are the variant's onboarding
evaluations (query text, 0/1 score, prompt and completion tokens).

Variants of the sizes in ``export_sizes`` are written as GGUF (:mod:`.export`) and checked: the
file loaded back with transformers must give the merged model's logits.

Writes ``OUT/variants.json`` (the manifest the gateway-side onboarding command reads) and
``OUT/<variant>.gguf``.

Usage::

    build_variants(Path("runs/fm"), Path("runs/fm/variants"), method="ties", export_sizes=[1, 2])
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.research.flexmerge.config import FlexMergeConfig
from training.research.flexmerge.llm import Question, prompt_text, questions

VARIANTS_FILE = "variants.json"
NAME_PREFIX = "smollm2-fm"


@dataclass
class Variant:
    name: str
    size: float
    method: str
    tasks: list[str]
    vectors: list[torch.Tensor] = field(repr=False)  # per block: the merged update
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def first_word(reply: str) -> str:
    m = re.search(r"[a-z]+", reply.lower())
    return m.group(0) if m else ""


def exact_match(reply: str, answer: str) -> bool:
    """The reply's first word is the answer (``"Yes."`` matches ``yes``; ``"Yesterday"`` not)."""
    return first_word(reply) == answer


def greedy_replies(
    model: Any, tok: Any, qs: Sequence[Question], *, max_new_tokens: int = 4
) -> list[tuple[str, int, int]]:
    """Greedy replies (text, prompt tokens, completion tokens up to and with ``<|im_end|>``)."""
    end = int(tok.convert_tokens_to_ids("<|im_end|>"))
    rows = [tok(prompt_text(q), add_special_tokens=False)["input_ids"] for q in qs]
    width = max(len(r) for r in rows)
    pad = int(tok.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding: every row's next token is at the end
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=pad, eos_token_id=end,
        )  # fmt: skip
    replies = []
    for i, r in enumerate(rows):
        gen = out[i, width:].tolist()
        n = gen.index(end) + 1 if end in gen else len(gen)
        text = tok.decode(gen[: n - 1 if end in gen[:n] else n], skip_special_tokens=True)
        replies.append((text, len(r), n))
    return replies


def query_set(tasks: Sequence[str], n: int, *, seed: int) -> list[Question]:
    """``n`` held-out (test-split) questions of every task, in task order."""
    return [q for t in tasks for q in questions(t, n, seed=seed, split="test")]


def measure(model: Any, tok: Any, qs: Sequence[Question]) -> list[dict[str, Any]]:
    """The onboarding evaluation rows of ``model`` on ``qs``."""
    rows = []
    for i in range(0, len(qs), 16):
        part = qs[i : i + 16]
        for j, (q, (reply, p_tok, c_tok)) in enumerate(
            zip(part, greedy_replies(model, tok, part), strict=True)
        ):
            rows.append({
                "query": q.text, "query_id": f"{q.task}-{i + j}", "category": q.task,
                "score": float(exact_match(reply, q.answer)), "answer": q.answer,
                "reply": reply, "prompt_tokens": p_tok, "completion_tokens": c_tok,
            })  # fmt: skip
    return rows


def accuracy_by_task(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    tasks = sorted({r["category"] for r in rows})
    return {t: float(np.mean([r["score"] for r in rows if r["category"] == t])) for t in tasks}


def load_run_config(run: Path) -> FlexMergeConfig:
    """The config a ``junction research flexmerge --llm`` run used (from its report.json)."""
    saved = json.loads((run / "report.json").read_text())["config"]
    known = {f.name for f in fields(FlexMergeConfig)}
    return FlexMergeConfig(**{k: v for k, v in saved.items() if k in known})


def task_deltas(run: Path, cfg: FlexMergeConfig, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each task's LoRA update (merged into full-weight shapes) from the run's saved adapters."""
    from training.research.flexmerge.llm import lora_deltas
    from training.research.smollm import add_lora, load_smollm2, num_layers, set_adapter_arrays

    out = []
    for t_i, task in enumerate(cfg.task_list()):
        path = run / "adapters" / f"{task}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run `junction research flexmerge --llm` first")
        model, _ = load_smollm2()
        n = num_layers(model)
        peft = add_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r,
                        layers=list(range(n - cfg.lora_layers, n)),
                        targets=cfg.lora_targets.split(","), seed=seed * 100 + t_i)  # fmt: skip
        with np.load(path) as z:
            set_adapter_arrays(peft, {k: z[k] for k in z.files})
        out.append(lora_deltas(peft))
    return out


def variant_name(method: str, size: float, tasks: Sequence[str]) -> str:
    return f"{NAME_PREFIX}-{method}-{size:g}x-{'+'.join(tasks)}"


def logits_gap(a: Any, b: Any, tok: Any, qs: Sequence[Question]) -> float:
    """Largest |logit difference| of two models over the prompts of ``qs`` (every position)."""
    gap = 0.0
    with torch.no_grad():
        for q in qs:
            ids = torch.tensor([tok(prompt_text(q), add_special_tokens=False)["input_ids"]])
            gap = max(gap, float((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max()))
    return gap


def load_gguf_model(path: Path) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return lm.eval()


def _silent(msg: str) -> None:  # noqa: ARG001 - a progress sink that drops everything
    return None


def build_variants(
    run: Path,
    out: Path,
    *,
    method: str = "ties",
    export_sizes: Sequence[float] = (1, 2),
    eval_per_task: int = 8,
    changed_type: str = "f32",
    seed: int = 0,
    check_fidelity: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Variants at every integer size M..1, measured; those at ``export_sizes`` written as GGUF.

    ``run``: a ``junction research flexmerge --llm`` output (its ``report.json`` and
    ``adapters/``, seed 0's). Returns (and writes) the manifest."""
    from training.data.tokens import smollm2_gguf_path
    from training.research.flexmerge.export import export_gguf
    from training.research.flexmerge.llm import WeightSetter, block_tau, layer_blocks, unflatten
    from training.research.flexmerge.merge import FlexMerge
    from training.research.smollm import load_smollm2, num_layers

    t0 = time.time()
    say = progress or _silent
    cfg = load_run_config(run)
    tasks = cfg.task_list()
    deltas = task_deltas(run, cfg, seed)
    work, tok = load_smollm2()
    blocks = layer_blocks(deltas, num_layers(work))
    tau = block_tau(deltas, blocks)
    names = [k for b in blocks for k in b]
    setter = WeightSetter(work, names)
    qs = query_set(tasks, eval_per_task, seed=seed)
    lam = cfg.ta_lam if method == "ta" else cfg.ties_lam
    fm = FlexMerge(tau, method=method, lam=lam, k=cfg.ties_k)

    base_rows = measure(work, tok, qs)  # nothing applied yet: the base model
    sizes: list[dict[str, Any]] = []
    variants: list[Variant] = []
    for target in range(len(tasks), 0, -1):
        while fm.size() > target + 1e-9:
            fm.step()
        here = []
        for members in fm.variants():
            v_tasks = [tasks[t] for t in members]
            v = Variant(variant_name(method, target, v_tasks), float(fm.size()), method, v_tasks,
                        [vec.clone() for vec in fm.task_vector(members[0])])  # fmt: skip
            setter.apply(blocks, v.vectors)
            v.evaluations = measure(work, tok, qs)
            here.append(v)
            say(f"{v.name}: accuracy {np.mean([r['score'] for r in v.evaluations]):.3f}")
        # each task answered by the variant that serves it (what FlexMerge's curve measures)
        own = {t: accuracy_by_task(v.evaluations)[t] for v in here for t in v.tasks}
        sizes.append({
            "size": float(fm.size()), "variants": [v.name for v in here],
            "stored_params": fm.stored_params(),
            "accuracy_own_variant": float(np.mean([own[t] for t in tasks])),
            "accuracy_own_variant_by_task": own,
        })  # fmt: skip
        variants.extend(here)

    src = smollm2_gguf_path()
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for v in variants:
        entry: dict[str, Any] = {
            "name": v.name, "size": v.size, "method": v.method, "tasks": v.tasks,
            "accuracy": float(np.mean([r["score"] for r in v.evaluations])),
            "accuracy_by_task": accuracy_by_task(v.evaluations), "evaluations": v.evaluations,
        }  # fmt: skip
        if any(abs(v.size - s) < 1e-9 for s in export_sizes):
            merged = {}
            for b_names, vec in zip(blocks, v.vectors, strict=True):
                merged.update(unflatten(vec, b_names, setter.shapes))
            info = export_gguf(src, out / f"{v.name}.gguf", merged, name=v.name,
                               changed_type=changed_type)  # fmt: skip
            entry["gguf"] = f"{v.name}.gguf"
            entry["export"] = {k: info[k] for k in ("bytes", "tensors")} | {
                "replaced": len(info["replaced"]),
                "changed_type": changed_type,
            }
            if check_fidelity:
                setter.apply(blocks, v.vectors)
                back = load_gguf_model(out / f"{v.name}.gguf")
                probe = qs[:: 2 * eval_per_task]
                entry["export"]["max_abs_logit_gap"] = logits_gap(work, back, tok, probe)
                setter.apply(blocks, [torch.zeros_like(vec) for vec in v.vectors])
                entry["export"]["max_abs_logit_gap_to_base"] = logits_gap(work, back, tok, probe)
                del back
            say(f"exported {v.name}.gguf ({info['bytes'] / 1e6:.1f} MB)")
        entries.append(entry)
    manifest = {
        "run": str(run), "source_gguf": src.name, "method": method, "lam": lam,
        "ties_k": cfg.ties_k, "tasks": tasks, "seed": seed, "eval_per_task": eval_per_task,
        "export_sizes": list(export_sizes), "changed_type": changed_type,
        "base": {"accuracy": float(np.mean([r["score"] for r in base_rows])),
                 "accuracy_by_task": accuracy_by_task(base_rows), "evaluations": base_rows},
        "sizes": sizes, "variants": entries, "seconds": time.time() - t0,
        "scoring": "greedy reply (<= 4 tokens) to the system turn 'Answer yes or no.' and the "
                   "question; score 1 when its first word is the right yes/no",
    }  # fmt: skip
    (out / VARIANTS_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
