"""Accuracy and tokens per method at several global budgets; tokens saved at equal accuracy.

For each seed: train TAB and TAB All-SubQ (or load them), draw fixed ``test`` problems, and run
every method at each global budget ``B = multiple * median length * turns``. A method's frontier
is its (mean tokens, accuracy) points over the budgets plus the origin, made monotone (the best
accuracy reachable with at most that many tokens) and linearly interpolated.

``tokens_saved_vs_static`` at one budget: the static baseline reaches accuracy ``a`` with ``s``
tokens; the method's frontier reaches ``a`` with ``m`` tokens; the saving is ``1 - m / s``
(undefined where the method never reaches ``a``). The report gives it per budget, its mean over
budgets and its maximum ("up to", as the paper reports), per seed and over seeds.
``oracle_gap`` is ``m / o - 1`` with ``o`` the oracle's tokens at the same accuracy.

Usage::

    report = run_eval(EvalConfig(seeds="0,1,2"), EnvConfig(), out=Path("reports/tab"))
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from budget_controller import baselines as bl
from budget_controller.config import EnvConfig, EvalConfig, TrainConfig
from budget_controller.data import Problems, SolverData
from budget_controller.env import ReplayEnv
from budget_controller.features import FeatureSpec
from budget_controller.model import BudgetPolicy
from budget_controller.train import build_spec, policy_allocator, train

log = logging.getLogger(__name__)
METHODS = ("static", "no_budget", "difficulty", "tab", "tab_all_subq", "oracle")
TARGETS = {"tab": 0.35, "tab_all_subq": 0.40}


def frontier_tokens(points: list[tuple[float, float]], accuracy: float) -> float | None:
    """Fewest tokens at which the monotone frontier of (tokens, accuracy) points reaches
    ``accuracy``; the origin (0 tokens, 0 accuracy) is always on it. None if never reached."""
    pts = sorted([(0.0, 0.0), *points])
    best = 0.0
    env: list[tuple[float, float]] = []
    for tok, acc in pts:
        best = max(best, acc)
        env.append((tok, best))
    if accuracy > env[-1][1] + 1e-12:
        return None
    for (t0, a0), (t1, a1) in zip(env, env[1:], strict=False):
        if a1 >= accuracy - 1e-12:
            if a1 - a0 <= 1e-12:
                return t1 if a0 < accuracy else t0
            return t0 + (accuracy - a0) / (a1 - a0) * (t1 - t0)
    return env[-1][0]


def with_budget(p: Problems, per_turn: float) -> Problems:
    B = (per_turn * p.num_turns).astype(np.float32)
    return Problems(p.questions, p.num_turns, B, p.solver)


def evaluate_seed(
    data: SolverData,
    env: ReplayEnv,
    policies: dict[str, tuple[BudgetPolicy, FeatureSpec]],
    *,
    seed: int,
    num_problems: int,
) -> dict[str, list[dict[str, float]]]:
    """Per method, one row per global budget: accuracy, tokens, share of budget used."""
    base = data.sample_problems("test", num_problems, np.random.default_rng(20_000 + seed))
    unit = data.median_length
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    free = env.rollout(bl.unbounded(base), bl.no_budget(base))
    for k in data.cfg.multiples:
        p = with_budget(base, k * unit)
        allocators = {
            "static": bl.static(p),
            "difficulty": bl.difficulty(p, env),
            "oracle": bl.oracle(p, env),
            **{
                # each policy acts with the feature spec (levels) saved in its checkpoint
                name: policy_allocator(pol, spec, p, greedy=True)
                for name, (pol, spec) in policies.items()
            },
        }
        for name, alloc in allocators.items():
            out = env.rollout(p, alloc)
            rows[name].append(_row(k, unit, out.solved, out.tokens, p.budget))
        rows["no_budget"].append(_row(k, unit, free.solved, free.tokens, p.budget))
    return rows


def _row(k: float, unit: float, solved: Any, tokens: Any, budget: Any) -> dict[str, float]:
    return {
        "budget_multiple": k,
        "budget_per_turn": round(k * unit, 1),
        "mean_budget": float(np.mean(budget)),
        "accuracy": float(np.mean(solved)),
        "tokens": float(np.mean(tokens)),
        "over_budget_rate": float(np.mean(tokens > budget + 1e-6)),
    }


def savings(
    rows: dict[str, list[dict[str, float]]], method: str, against: str = "static"
) -> list[float | None]:
    """1 - tokens(method at the static accuracy) / tokens(static), per budget."""
    pts = [(r["tokens"], r["accuracy"]) for r in rows[method]]
    out: list[float | None] = []
    for r in rows[against]:
        m = frontier_tokens(pts, r["accuracy"])
        out.append(None if m is None or r["tokens"] <= 0 else 1.0 - m / r["tokens"])
    return out


def oracle_gap(rows: dict[str, list[dict[str, float]]], method: str) -> list[float | None]:
    """tokens(method) / tokens(oracle) - 1 at each static accuracy."""
    m_pts = [(r["tokens"], r["accuracy"]) for r in rows[method]]
    o_pts = [(r["tokens"], r["accuracy"]) for r in rows["oracle"]]
    out: list[float | None] = []
    for r in rows["static"]:
        m = frontier_tokens(m_pts, r["accuracy"])
        o = frontier_tokens(o_pts, r["accuracy"])
        out.append(None if m is None or not o else m / o - 1.0)
    return out


def _summary(per_seed: list[list[float | None]]) -> dict[str, Any]:
    means = [
        float(np.mean([v for v in s if v is not None]))
        for s in per_seed
        if any(v is not None for v in s)
    ]
    maxes = [max(v for v in s if v is not None) for s in per_seed if any(v is not None for v in s)]
    by_budget = [[s[i] for s in per_seed] for i in range(len(per_seed[0]))] if per_seed else []
    return {
        "per_seed_by_budget": per_seed,
        "per_seed_mean": means,
        "per_seed_max": maxes,
        "mean": float(np.mean(means)) if means else None,
        "std": float(np.std(means)) if means else None,
        "max_mean_over_seeds": float(np.mean(maxes)) if maxes else None,
        "by_budget_mean": [
            float(np.mean([v for v in col if v is not None]))
            if any(v is not None for v in col)
            else None
            for col in by_budget
        ],
    }


def run_eval(
    cfg: EvalConfig,
    env_cfg: EnvConfig,
    *,
    out: Path,
    train_cfg: TrainConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = SolverData.load(env_cfg)
    spec = build_spec(data)
    env = ReplayEnv(data, spec)
    base_train = train_cfg or TrainConfig()
    ck_dir = Path(cfg.checkpoints) if cfg.checkpoints else out / "checkpoints"
    per_seed: list[dict[str, list[dict[str, float]]]] = []
    training: dict[str, list[dict[str, Any]]] = {"tab": [], "tab_all_subq": []}
    for seed in cfg.seed_list:
        policies: dict[str, tuple[BudgetPolicy, FeatureSpec]] = {}
        for name, all_subq in (("tab", False), ("tab_all_subq", True)):
            path = ck_dir / f"{name}_seed{seed}.pt"
            if not cfg.checkpoints:
                tc = TrainConfig(
                    **{
                        **asdict(base_train),
                        "seed": seed,
                        "all_subq": all_subq,
                        "steps": cfg.steps,
                        "out": str(ck_dir),
                    }
                )
                res = train(tc, env_cfg, data=data, name=path.stem, progress=progress)
                training[name].append(
                    {"seed": seed, "seconds": res.seconds, "best": res.best, "history": res.history}
                )
            policy, policy_spec, info = BudgetPolicy.from_checkpoint(path)
            if cfg.checkpoints:
                # `junction budget train` leaves its history beside the checkpoint.
                log_path = path.with_suffix(".json")
                hist = json.loads(log_path.read_text()) if log_path.exists() else {}
                training[name].append(
                    {
                        "seed": seed,
                        "best": info["metrics"],
                        "step": info["step"],
                        "seconds": hist.get("seconds"),
                        "history": hist.get("history", []),
                    }
                )
            policies[name] = (policy, policy_spec)
        per_seed.append(
            evaluate_seed(data, env, policies, seed=seed, num_problems=cfg.num_problems)
        )
    methods = {
        m: {
            "per_seed": [s[m] for s in per_seed],
            "mean": [
                {key: float(np.mean([s[m][i][key] for s in per_seed])) for key in per_seed[0][m][i]}
                for i in range(len(per_seed[0][m]))
            ],
        }
        for m in METHODS
    }
    saved = {
        m: _summary([savings(s, m) for s in per_seed])
        for m in ("tab", "tab_all_subq", "difficulty", "oracle")
    }
    gaps = {m: _summary([oracle_gap(s, m) for s in per_seed]) for m in ("tab", "tab_all_subq")}
    report: dict[str, Any] = {
        # One number per policy: the fraction of static's tokens saved at static's accuracy,
        # averaged over the budgets where the policy reaches it, then over seeds; and the best.
        "summary": {
            m: {
                "tokens_saved_vs_static": saved[m]["mean"],
                "tokens_saved_vs_static_std": saved[m]["std"],
                "tokens_saved_vs_static_max": saved[m]["max_mean_over_seeds"],
                "budgets_reaching_static_accuracy": sum(
                    v is not None for v in saved[m]["by_budget_mean"]
                ),
                "oracle_gap": gaps[m]["mean"],
            }
            for m in ("tab", "tab_all_subq")
        },
        "dataset": env_cfg.dataset,
        "solvers": data.solvers,
        "budget_unit_tokens": data.median_length,
        "budget_levels": spec.levels,
        "budget_multiples": env_cfg.multiples,
        "seeds": cfg.seed_list,
        "num_test_problems": cfg.num_problems,
        "env": asdict(env_cfg),
        "train": asdict(base_train) | {"steps": cfg.steps},
        "methods": methods,
        "tokens_saved_vs_static": saved,
        "oracle_gap": gaps,
        "targets": {
            m: {
                "target": t,
                "measured_mean": saved[m]["mean"],
                "measured_max": saved[m]["max_mean_over_seeds"],
                "met_by_mean": saved[m]["mean"] is not None and saved[m]["mean"] >= t,
                "met_by_max": saved[m]["max_mean_over_seeds"] is not None
                and saved[m]["max_mean_over_seeds"] >= t,
            }
            for m, t in TARGETS.items()
        },
        "training": training,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    from budget_controller.plots import plot_frontier, plot_training

    plot_frontier(report, out / "frontier.png")
    if any(training[m] and "history" in training[m][0] for m in training):
        plot_training(report, out / "training.png")
    return report
