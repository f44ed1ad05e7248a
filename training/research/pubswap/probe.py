"""How often the base model's sampled replies are correct, per task type: does GRPO get signal?

A GRPO group carries signal only when its rewards are mixed (some correct, some not). This tool
samples ``--group`` replies at ``--temperature`` (no top-k, as the job samples) for ``--prompts``
private prompts per task type (client k's set, task type k, the job's seeded data) with the
base SmolLM2-135M-Instruct, and prints, per prompt style and reward rule, the correct samples,
the fraction of groups with mixed rewards, and the greedy accuracy on the test set.

Usage (about a minute on 2 CPU cores)::

    python -m training.research.pubswap.probe --styles plain,oneshot --rules first_line,first_word
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def probe(
    *,
    styles: list[str],
    rules: list[str],
    prompts: int,
    group: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    test_per_task: int,
) -> dict[str, Any]:
    import torch

    from training.research.pubswap.grpo import decode, encode, greedy, sample
    from training.research.pubswap.rewards import is_correct
    from training.research.pubswap.tasks import TASKS, task_data
    from training.research.smollm import load_smollm2

    torch.set_num_threads(1)
    model, tok = load_smollm2()
    data = task_data(
        seed=seed, clients=len(TASKS), per_client=prompts, public_per_task=2,
        test_per_task=test_per_task,
    )  # fmt: skip
    out: dict[str, Any] = {}
    for style in styles:
        for k, task in enumerate(TASKS):
            items = data.private[k]
            groups = sample(
                model, tok, encode(tok, items, style), group=group,
                max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
            )  # fmt: skip
            texts = [decode(tok, g) for g in groups]
            test = [it for it in data.test if it.task == task]
            got = greedy(model, tok, encode(tok, test, style), max_new_tokens=max_new_tokens)
            for rule in rules:
                ok = [
                    [is_correct(t, it.answer, rule=rule) for t in g]
                    for g, it in zip(texts, items, strict=True)
                ]
                out[f"{style}/{rule}/{task}"] = {
                    "correct": int(sum(map(sum, ok))),
                    "samples": prompts * group,
                    "mixed_groups": int(sum(0 < sum(g) < group for g in ok)),
                    "groups": prompts,
                    "greedy_test": float(
                        np.mean(
                            [
                                is_correct(t, it.answer, rule=rule)
                                for t, it in zip(got, test, strict=True)
                            ]
                        )
                    ),
                    "examples": texts[0][: min(group, 4)],
                }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--styles", default="plain,oneshot")
    ap.add_argument("--rules", default="first_line,first_word")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-per-task", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    t0 = time.time()
    res = probe(
        styles=a.styles.split(","), rules=a.rules.split(","), prompts=a.prompts, group=a.group,
        temperature=a.temperature, max_new_tokens=a.max_new_tokens, seed=a.seed,
        test_per_task=a.test_per_task,
    )  # fmt: skip
    lines = ["style/rule/task: correct samples, groups with mixed rewards, greedy test accuracy"]
    for key, r in res.items():
        lines.append(
            f"{key:28s} {r['correct']:3d}/{r['samples']}  mixed {r['mixed_groups']}/{r['groups']}"
            f"  greedy {r['greedy_test']:.2f}  e.g. {r['examples']}"
        )
    lines.append(f"{time.time() - t0:.0f} s")
    sys.stdout.write("\n".join(lines) + "\n")
    if a.json:
        args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
        a.json.write_text(json.dumps({"args": args, "results": res}, indent=1) + "\n")


if __name__ == "__main__":
    main()
