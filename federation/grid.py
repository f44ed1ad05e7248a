"""The committed experiment grid behind ``federation/RESULTS.md``: every run by name.

``junction federate grid`` runs the named runs (sequentially, skipping those whose report is
already there) and keeps only what RESULTS.md needs: each run's ``report.json`` and
``summary.md`` under ``federation/results/runs/<name>/`` (small, committed); the routers and plots
stay under a scratch directory. ``junction federate results`` turns those reports into
RESULTS.md, so every figure there comes from one committed report.

Three logs, 10 clients, task alpha 0.6, 30 rounds, seeds 0-2:

- ``rb``: RouterBench (11 models);
- ``mm``: MMLU-Pro, its 18 seen models (the 4 held out for onboarding stay out);
- ``mm22skew``: the third log made by the command from the MMLU-Pro evaluation log: all 22 models
  (``held-out=include``) with strong per-client model skew (logging-policy alpha 0.1, so each
  client logs mostly one to three models).

MLP methods (chosen on validation AUC, seed 0 of every log; see RESULTS.md):
``avg`` (per-model heads, FedAvg), ``avgm`` (per-model heads, server momentum on the trunk),
``shared`` (model-embedding-conditioned shared head, FedAvg), ``prox`` (per-model heads, FedProx
with mu 0.01 on the trunk), ``adam`` (per-model heads, FedAdam on the trunk), ``avglr``
(per-model heads, FedAvg, the embedding head's lr 3e-4: the like-for-like control), ``emb`` (one head
conditioned on fixed model embeddings from the training rows, FedAvg, lr 3e-4;
``local.EmbeddingHeadNet``), ``embsgd`` (the same head, its clients running plain SGD, lr 1, in
place of a fresh AdamW each round).

Usage::

    junction federate grid --out federation/results/runs --only 'rb_*'
    junction federate results federation/results/runs --out federation/RESULTS.md
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from federation.config import FederationConfig
from federation.simulate import CENTRAL_LRS

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
ADAM_LR = 0.01  # FedAdam's server learning rate (tau 1e-3); one value, not tuned (RESULTS.md)
# chosen on the seed-0 validation AUC of RouterBench and MMLU-Pro (RESULTS.md notes):
EMB_LR = 3e-4  # the embedding-conditioned head's (client and centralised) lr, of 1e-3 and 3e-4
# (``avglr`` runs the per-model heads at the same lr, so the head is compared like for like)
# The main runs choose the client lr on the server's validation set (one federated training
# each) and keep the training round with the best validation AUC (select-round, the default).
# AdamW clients choose from the centralised baseline's candidates; SGD clients from the two
# with the best mean seed-0 validation AUC over the three logs of a scan of 1, 0.3, 0.1, 0.03
# (results/tried/sgd_scan), 1 being the best single one.
CHOSEN_LRS = ",".join(f"{x:g}" for x in CENTRAL_LRS)
SGD_LR = 1.0
SGD_LRS = "1,0.3"
LOGS: dict[str, dict[str, Any]] = {
    "rb": {"logs": "routerbench"},
    "mm": {"logs": "mmlu_pro"},
    "mm22skew": {"logs": "mmlu_pro", "held_out": "include", "model_alpha": 0.1},
}
MLP_METHODS: dict[str, dict[str, Any]] = {
    "avg": {"head": "per-model", "server_opt": "avg"},
    "avgm": {"head": "per-model", "server_opt": "momentum", "server_lr": 1.0,
             "server_momentum": 0.7},
    "shared": {"head": "shared", "server_opt": "avg"},
    "prox": {"head": "per-model", "server_opt": "avg", "prox_mu": 0.01},
    "adam": {"head": "per-model", "server_opt": "adam", "server_lr": ADAM_LR,
             "server_momentum": 0.9},
    "avglr": {"head": "per-model", "server_opt": "avg", "lr": EMB_LR},
    "emb": {"head": "embedding", "server_opt": "avg", "lr": EMB_LR, "lrs": CHOSEN_LRS},
    "embsgd": {"head": "embedding", "server_opt": "avg", "client_opt": "sgd", "lr": SGD_LR,
               "lrs": SGD_LRS},
}  # fmt: skip
# best mean validation AUC (RESULTS.md, "MLP method, chosen on validation"); embsgd replaced emb
# by the cross-fitted rule of commit 1c76283 (NOTES.md)
CHOSEN_MLP = "embsgd"
EARLIER_MLP = ("prox", "emb")  # kept before: their three seeds stay in the grid
EXTRA_MLP = "avg"  # the method of the expansion and join runs (run before prox was measured)
BASE: dict[str, Any] = {"clients": 10, "alpha": 0.6, "rounds": 30}
# Every MLP run keeps the training round with the best validation AUC (select-round, the
# default), so the method table compares every method on one rule; the expansion and join
# stages continue from the kept round.


def runs() -> dict[str, FederationConfig]:
    """Every run of the grid by name."""
    out: dict[str, FederationConfig] = {}
    for log_name, data in LOGS.items():
        for method, knobs in MLP_METHODS.items():
            seeds = SEEDS if method in (CHOSEN_MLP, EXTRA_MLP, *EARLIER_MLP) else (0,)
            for s in seeds:
                out[f"{log_name}_mlp_{method}_s{s}"] = FederationConfig(
                    **BASE, **data, **knobs, router="mlp", seed=s
                )
        for s in SEEDS:
            out[f"{log_name}_kmeans_s{s}"] = FederationConfig(
                **BASE, **data, router="kmeans", seed=s
            )
    chosen = MLP_METHODS[EXTRA_MLP]
    # Model expansion: onboarding a held-out MMLU-Pro model with a fixed 10% calibration set
    # per client; new clients: the last two join after 30 rounds.
    for r in ("mlp", "kmeans"):
        knobs = chosen if r == "mlp" else {}
        out[f"mm_{r}_expand_s0"] = FederationConfig(
            **BASE, **LOGS["mm"], **knobs, router=r, seed=0, expand_model="Yi-34B"
        )
    # ... and on RouterBench its most accurate model, left out of the first training (the
    # MMLU-Pro held-out models are all dominated by gemini-1.5-flash-002 there)
    for r in ("mlp", "kmeans"):
        knobs = chosen if r == "mlp" else {}
        out[f"rb_{r}_expand_s0"] = FederationConfig(
            **BASE, **LOGS["rb"], **knobs, router=r, seed=0, expand_model="gpt-4-1106-preview"
        )
    out["rb_mlp_join_s0"] = FederationConfig(
        **BASE, **LOGS["rb"], **chosen, router="mlp", seed=0, new_clients=2
    )
    return out


def select(pattern: str | None) -> dict[str, FederationConfig]:
    all_runs = runs()
    if not pattern:
        return all_runs
    picked = {n: c for n, c in all_runs.items() if fnmatch.fnmatch(n, pattern)}
    if not picked:
        raise KeyError(f"no run matches {pattern!r} (runs: {sorted(all_runs)})")
    return picked


def with_settings(cfg: FederationConfig, settings: list[str]) -> FederationConfig:
    """``cfg`` with ``key=value`` run-config settings (kebab or snake case) on top, typed as
    the config's own fields; an unknown key is an error."""
    pairs = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"a setting is key=value, got {item!r}")
        pairs[key.strip().replace("_", "-")] = value.strip()
    return FederationConfig.from_run_config({**cfg.to_run_config(), **pairs})


def run_grid(
    out: Path,
    scratch: Path,
    *,
    pattern: str | None = None,
    force: bool = False,
    settings: list[str] | None = None,
    suffix: str = "",
) -> list[str]:
    """Run the selected runs whose report is missing (all with ``force``); returns their names.

    ``settings`` (``key=value``) change every selected run, a variant tried beside the grid
    (its reports go to ``OUT/<run><suffix>``)."""
    from federation.simulate import simulate

    if settings and not suffix:
        raise ValueError("a variant (settings) needs a suffix, so it never overwrites the grid")
    done = []
    for base_name, base_cfg in select(pattern).items():
        name = base_name + suffix
        cfg = with_settings(base_cfg, settings) if settings else base_cfg
        dest = out / name
        if (dest / "report.json").exists() and not force:
            continue
        log.info("run %s", name)
        work = scratch / name
        simulate(replace(cfg), work, progress=True)
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("report.json", "summary.md"):
            shutil.copyfile(work / f, dest / f)
        done.append(name)
    return done


def load_reports(runs_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        p.parent.name: json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/report.json"))
    }
