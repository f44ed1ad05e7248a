"""Accuracy and tokens per method at several global budgets; tokens saved at equal accuracy.

For each seed: train TAB and TAB All-SubQ (or load them), draw fixed ``test`` problems, and run
every method at each global budget ``B = multiple * median length * turns``. A method's frontier
is its (mean tokens, accuracy) points over the budgets plus the origin, made monotone (the best
accuracy reachable with at most that many tokens) and linearly interpolated.

``tokens_saved_vs_static`` at one budget: the static baseline reaches accuracy ``a`` with ``s``
tokens; the method's frontier reaches ``a`` with ``m`` tokens; the saving is ``1 - m / s``
(undefined where the method never reaches ``a``). The report gives it per budget, its mean over
budgets and its maximum ("up to", as the paper reports), per seed and over seeds, on two
accuracies: whole-problem (every turn correct) and per-turn (the fraction of turns correct; the
``_per_turn`` keys). ``oracle_gap`` is ``m / o - 1`` with ``o`` the oracle's tokens at the same
accuracy (``oracle`` for whole problems, ``oracle_turn`` per turn).

The policies evaluated are the served ones: the same action set as the gateway's (``config.py``:
no skip action), acting greedily.

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
from budget_controller.env import ReplayEnv, Rollout
from budget_controller.features import FeatureSpec
from budget_controller.model import BudgetPolicy
from budget_controller.train import build_spec, policy_allocator, train

log = logging.getLogger(__name__)
METHODS = ("static", "no_budget", "difficulty", "tab", "tab_all_subq", "oracle", "oracle_turn")
POLICIES = ("tab", "tab_all_subq")
# accuracy key of a report row -> (suffix of the summary keys, the oracle for that accuracy)
METRICS = {"accuracy": ("", "oracle"), "turn_accuracy": ("_per_turn", "oracle_turn")}
ALLOCATION_MULTIPLE = 2.0  # the budget (in median lengths per turn) of the allocation plot
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
    allocations: dict[str, dict[str, list[float]]] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Per method, one row per global budget: accuracies, tokens, share of budget used.

    ``allocations``, when given, receives every turn's needed length, grant and outcome per
    method at ``ALLOCATION_MULTIPLE`` (for the grant vs needed length plot)."""
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
            "oracle_turn": bl.oracle_turn(p, env),
            **{
                # each policy acts with the feature spec (levels) saved in its checkpoint
                name: policy_allocator(pol, spec, p, greedy=True)
                for name, (pol, spec) in policies.items()
            },
        }
        need, _ = env.needed(p)
        for name, alloc in allocators.items():
            out = env.rollout(p, alloc)
            rows[name].append(_row(k, unit, out, p.budget))
            if allocations is not None and k == ALLOCATION_MULTIPLE:
                a = out.active
                allocations[name] = {
                    "needed": need[a].tolist(),
                    "granted": out.granted[a].tolist(),
                    "correct": out.turn_correct[a].astype(float).tolist(),
                }
        rows["no_budget"].append(_row(k, unit, free, p.budget))
    return rows


def _row(k: float, unit: float, out: Rollout, budget: Any) -> dict[str, float]:
    return {
        "budget_multiple": k,
        "budget_per_turn": round(k * unit, 1),
        "mean_budget": float(np.mean(budget)),
        "accuracy": float(np.mean(out.solved)),
        "turn_accuracy": float(np.sum(out.turn_correct)) / max(1.0, float(np.sum(out.active))),
        "tokens": float(np.mean(out.tokens)),
        "over_budget_rate": float(np.mean(out.tokens > budget + 1e-6)),
    }


def savings(
    rows: dict[str, list[dict[str, float]]],
    method: str,
    against: str = "static",
    metric: str = "accuracy",
) -> list[float | None]:
    """1 - tokens(method at the static accuracy) / tokens(static), per budget."""
    pts = [(r["tokens"], r[metric]) for r in rows[method]]
    out: list[float | None] = []
    for r in rows[against]:
        m = frontier_tokens(pts, r[metric])
        out.append(None if m is None or r["tokens"] <= 0 else 1.0 - m / r["tokens"])
    return out


def oracle_gap(
    rows: dict[str, list[dict[str, float]]], method: str, metric: str = "accuracy"
) -> list[float | None]:
    """tokens(method) / tokens(oracle) - 1 at each static accuracy."""
    oracle = METRICS[metric][1]
    m_pts = [(r["tokens"], r[metric]) for r in rows[method]]
    o_pts = [(r["tokens"], r[metric]) for r in rows[oracle]]
    out: list[float | None] = []
    for r in rows["static"]:
        m = frontier_tokens(m_pts, r[metric])
        o = frontier_tokens(o_pts, r[metric])
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
    # per turn at ALLOCATION_MULTIPLE, first seed: needed length, grant, outcome per method
    allocations: dict[str, dict[str, list[float]]] = {}
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
            evaluate_seed(
                data,
                env,
                policies,
                seed=seed,
                num_problems=cfg.num_problems,
                allocations=allocations if not allocations else None,
            )
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
    saved: dict[str, dict[str, Any]] = {}
    gaps: dict[str, dict[str, Any]] = {}
    for metric, (suffix, oracle) in METRICS.items():
        for m in (*POLICIES, "difficulty", oracle):
            saved[m + suffix] = _summary([savings(s, m, metric=metric) for s in per_seed])
        for m in POLICIES:
            gaps[m + suffix] = _summary([oracle_gap(s, m, metric=metric) for s in per_seed])
    n_budgets = len(env_cfg.multiples)

    def reached(key: str) -> int:
        """Budgets of the grid where the policy reaches static's accuracy on every seed."""
        per_seed = saved[key]["per_seed_by_budget"]
        return sum(all(s[i] is not None for s in per_seed) for i in range(n_budgets))

    summary: dict[str, dict[str, Any]] = {}
    for m in POLICIES:
        row: dict[str, Any] = {}
        for suffix, _ in METRICS.values():
            k = m + suffix
            row |= {
                f"tokens_saved_vs_static{suffix}": saved[k]["mean"],
                f"tokens_saved_vs_static{suffix}_std": saved[k]["std"],
                f"tokens_saved_vs_static{suffix}_max": saved[k]["max_mean_over_seeds"],
                f"tokens_saved_vs_static{suffix}_by_budget": saved[k]["by_budget_mean"],
                f"budgets_reaching_static_accuracy{suffix}": reached(k),
                f"oracle_gap{suffix}": gaps[k]["mean"],
            }
        summary[m] = row
    targets: dict[str, Any] = {}
    for m, t in TARGETS.items():
        for suffix, _ in METRICS.values():
            k = m + suffix
            mean = saved[k]["mean"]
            targets[k] = {
                "target": t,
                "measured_mean": mean,
                "measured_max": saved[k]["max_mean_over_seeds"],
                "budgets_reaching_static_accuracy": reached(k),
                "budgets": n_budgets,
                # the target: the mean saving, with every budget reaching static's accuracy
                "met": mean is not None and mean >= t and reached(k) == n_budgets,
            }
    report: dict[str, Any] = {
        # One number per served policy: the fraction of static's tokens saved at static's
        # accuracy (whole-problem; ``_per_turn``: per-turn), averaged over the budgets where the
        # policy reaches it, then over seeds; how many budgets that is; the gap to the oracle.
        "summary": summary,
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
        "targets": targets,
        "allocations": _allocation_table(allocations),
        "training": training,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    from budget_controller.plots import plot_allocations, plot_frontier, plot_training

    plot_frontier(report, out / "frontier.png")
    plot_allocations(allocations, out / "allocations.png", budget_multiple=ALLOCATION_MULTIPLE)
    if any(training[m] and "history" in training[m][0] for m in training):
        plot_training(report, out / "training.png")
    return report


NEED_BINS = (0, 25, 50, 100, 200, 400, 800, 10**9)


def _allocation_table(allocations: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per method and needed-length bin: turns, mean grant, tokens used, turns correct.

    Where each method's tokens go: the oracle grants each turn exactly its needed length (or
    nothing), static the same share whatever the turn needs."""
    table: dict[str, Any] = {"budget_multiple": ALLOCATION_MULTIPLE, "needed_bins": NEED_BINS}
    for name, d in allocations.items():
        need = np.asarray(d["needed"])
        grant = np.asarray(d["granted"])
        ok = np.asarray(d["correct"])
        rows = []
        for lo, hi in zip(NEED_BINS, NEED_BINS[1:], strict=False):
            sel = (need >= lo) & (need < hi)
            n = int(sel.sum())
            rows.append(
                {
                    "needed": [lo, hi],
                    "turns": n,
                    "mean_grant": float(grant[sel].mean()) if n else None,
                    "tokens_per_turn": float(np.minimum(grant, need)[sel].mean()) if n else None,
                    "turn_accuracy": float(ok[sel].mean()) if n else None,
                }
            )
        table[name] = rows
    return table
