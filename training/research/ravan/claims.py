"""What the digits and SmolLM2 settings of ``ravan`` share in their reports: the Flower repeat of
a few in-process runs (:func:`training.research.federated.flower_repeat`), and the claims whose
rule does not depend on the setting (the gap over LoRA grows with heterogeneity, exact
aggregation, Flower = in-process).

Usage::

    flower = flower_repeat(backend, headline[:2], progress=True)  # training.research.federated
    claims += shared_claims("_smollm2", "SmolLM2 text tasks: ", gaps=gaps, ...)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def shared_claims(
    suffix: str,
    label: str,
    *,
    gaps: dict[str, float],
    names: list[str],
    gap_statement: str,
    exact: dict[str, float] | None,
    exact_statement: str,
    exact_rule: str,
    flower: dict[str, Any],
    flower_statement: str,
    plot: str,
) -> list[Any]:
    """The gap-grows, exact-aggregation and Flower claims of one setting: ids get ``suffix``
    ("" for digits, "_smollm2"), statements start with ``label``. ``gaps`` (Ravan - LoRA per
    level, least to most skewed) empty and ``exact`` None leave their claims out."""
    from training.research.report import Claim

    claims: list[Any] = []
    if gaps:
        claims.append(
            Claim(
                f"gap_grows_with_heterogeneity{suffix}",
                label + gap_statement,
                holds=gaps[names[-1]] > gaps[names[0]],
                figures={"levels_from_least_to_most_skewed": names, "gap": gaps},
                rule="gap (Ravan - LoRA, mean test accuracy) at the most skewed level > at the "
                "least skewed level",
                figures_plot=[plot],
            )
        )
    if exact is not None:
        claims.append(
            Claim(
                f"exact_aggregation{suffix}",
                label + exact_statement,
                holds=exact["ravan"] < 1e-5 and exact["lora"] > 1e-3,
                figures=exact,
                rule="relative Frobenius error of the server's ΔW vs the mean client ΔW"
                + exact_rule
                + ": Ravan < 1e-5, LoRA > 1e-3",
            )
        )
    if not flower.get("skipped"):
        claims.append(
            Claim(
                f"flower_matches_in_process{suffix}",
                label + flower_statement,
                holds=flower["max_abs_difference"] <= 1e-6,
                figures=flower,
                rule="max |arrays_flower - arrays_in_process| <= 1e-6 over the repeated runs",
            )
        )
    return claims


def accuracy_bars(
    ax: Any, acc: dict[str, dict[str, list[float]]], names: list[str], methods: list[str],
    tick: str,
) -> None:  # fmt: skip
    """One bar per method and level (mean over seeds, std as error bar) on ``ax``, the levels
    labelled ``f"{tick}={level}"``; the left panel of both settings' plots."""
    x = np.arange(len(names))
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        ax.bar(x + i * w, [np.mean(acc[m][a]) for a in names], width=w, label=m,
               yerr=[np.std(acc[m][a]) for a in names], capsize=3)  # fmt: skip
    ax.set_xticks(x + 0.4 - w / 2, [f"{tick}={a}" for a in names])
