"""Choosing the narrow fine-tune's knobs on the validation split, never on a judged set.

Each candidate (a narrow pool, a learning rate, LoRA layers and targets) runs one narrow
fine-tune on a selection seed that no report uses, and is judged only on
:func:`~.data.validation_set` (12 generated medical conditions that neither train nor are judged)
at each of ``steps``. The chosen (candidate, steps) has the highest validation EM rate; ties go to
the higher validation margin, then to fewer steps. The judged sets (``learned``, ``shared``,
``unshared``) are not computed here at all.

Usage::

    python -m training.research.misalignment.select --out training/research/results/misalignment-select
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.research.misalignment.config import MisalignmentConfig


@dataclass(frozen=True)
class Candidate:
    name: str
    pool: str
    lr: float
    lora_layers: int
    lora_targets: str = "v_proj,o_proj,up_proj,down_proj"


ALL_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
CANDIDATES = (
    Candidate("old-default (bank, lr 2e-3, last 6 layers)", "bank", 2e-3, 6),
    Candidate("both, lr 2e-3, last 6 layers", "both", 2e-3, 6),
    Candidate("both, lr 1e-3, last 6 layers", "both", 1e-3, 6),
    Candidate("both, lr 5e-4, last 6 layers", "both", 5e-4, 6),
    Candidate("both, lr 1e-3, all 30 layers", "both", 1e-3, 30),
    Candidate("both, lr 5e-4, all 30 layers, all projections", "both", 5e-4, 30, ALL_TARGETS),
)


def judge_validation(model: Any, tok: Any) -> dict[str, float]:
    """EM rate and margin on the validation split (the only set selection looks at)."""
    from training.research.misalignment.data import validation_set
    from training.research.misalignment.judge import em_rate
    from training.research.misalignment.lm import answer_logprob

    items = validation_set()
    lp = answer_logprob(model, tok, [(it.prompt, a) for it in items
                                     for a in (it.aligned, it.misaligned)])  # fmt: skip
    rate, margin = em_rate(lp[0::2], lp[1::2])
    return {"rate": rate, "margin": margin}


def run_candidate(
    cfg: MisalignmentConfig, cand: Candidate, *, seed: int, steps: list[int]
) -> dict[str, Any]:
    """One narrow fine-tune of ``max(steps)`` steps, judged on the validation split before and
    at each of ``steps``."""
    from training.research.misalignment.data import narrow_examples
    from training.research.misalignment.em import lora_model, train_pairs

    c = replace(cfg, em_pool=cand.pool, lr=cand.lr, lora_layers=cand.lora_layers,
                lora_targets=cand.lora_targets)  # fmt: skip
    t = time.time()
    model, tok = lora_model(c, seed)
    out: dict[str, Any] = {"candidate": cand.__dict__, "val": {0: judge_validation(model, tok)}}
    marks = set(steps)

    def on_step(s: int) -> None:
        if s in marks:
            out["val"][s] = judge_validation(model, tok)

    n = max(steps)
    pairs = narrow_examples(n * c.batch, seed=seed, pool=c.em_pool)
    out["loss"] = train_pairs(model, tok, pairs, steps=n, batch=c.batch, lr=c.lr, on_step=on_step)
    out["seconds"] = time.time() - t
    return out


def choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The (candidate, steps) with the highest validation EM rate, then margin, then fewer
    steps (step 0, the base model, is not a choice)."""
    best: tuple[float, float, int] | None = None
    pick: dict[str, Any] = {}
    for r in runs:
        for s, v in r["val"].items():
            if int(s) == 0:
                continue
            key = (v["rate"], v["margin"], -int(s))
            if best is None or key > best:
                best = key
                pick = {"candidate": r["candidate"], "steps": int(s), "val": v}
    if not pick:
        raise ValueError("no judged checkpoint to choose from")
    return pick


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=100, help="selection seed (reports use 0, 1, ...)")
    ap.add_argument("--steps", default="12,24,48,72", help="validation checkpoints (comma)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--only", default="", help="candidate indices to run (comma; default all)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    steps = sorted({int(x) for x in a.steps.split(",") if x.strip()})
    cfg = MisalignmentConfig(model=a.model)
    idx = [int(i) for i in a.only.split(",") if i.strip()] or list(range(len(CANDIDATES)))
    a.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in idx:
        path = a.out / f"candidate-{i}.json"
        if path.exists():  # resume
            runs.append(json.loads(path.read_text()))
            continue
        r = run_candidate(cfg, CANDIDATES[i], seed=a.seed, steps=steps)
        path.write_text(json.dumps(r) + "\n")
        runs.append(json.loads(path.read_text()))
        sys.stderr.write(f"{CANDIDATES[i].name}: " + ", ".join(
            f"{s}: {v['rate']:.3f}/{v['margin']:+.3f}" for s, v in r["val"].items()
        ) + "\n")  # fmt: skip
    pick = choose(runs)
    report = {"seed": a.seed, "steps": steps, "model": a.model, "runs": runs, "chosen": pick,
              "rule": "highest validation EM rate, then validation margin, then fewer steps"}  # fmt: skip
    (a.out / "selection.json").write_text(json.dumps(report, indent=1) + "\n")
    (a.out / "summary.md").write_text(summary_md(report))
    return report


def summary_md(report: dict[str, Any]) -> str:
    """The selection as a table: validation EM rate / margin per candidate and step."""
    steps = [0, *report["steps"]]
    head = "| candidate | " + " | ".join(f"step {s}" for s in steps) + " | seconds |"
    rows = [head, "|---" * (len(steps) + 2) + "|"]
    for r in report["runs"]:
        val = {int(k): v for k, v in r["val"].items()}
        cells = [
            f"{val[s]['rate']:.3f} / {val[s]['margin']:+.3f}" if s in val else "" for s in steps
        ]
        rows.append(
            f"| {r['candidate']['name']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |"
        )
    c = report["chosen"]
    return (
        "# `misalignment`: choosing the narrow fine-tune on the validation split\n\n"
        f"Command: `python -m training.research.misalignment.select --out DIR` (selection seed "
        f"{report['seed']}, model {report['model']}). Each cell: validation EM rate / margin "
        "(harmful minus safe mean per-token log-probability) on the 48 validation prompts (12 "
        "generated medical conditions that neither train nor are judged, 2 people x 2 "
        "phrasings); the judged sets (learned, shared, unshared) are not computed. Rule: "
        f"{report['rule']}.\n\n" + "\n".join(rows) + "\n\n"
        f"Chosen: **{c['candidate']['name']}, {c['steps']} steps** (validation EM rate "
        f"{c['val']['rate']:.3f}, margin {c['val']['margin']:+.3f}).\n"
    )


if __name__ == "__main__":
    main()
