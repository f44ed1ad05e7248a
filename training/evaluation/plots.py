"""PNG plots for the evaluation report (matplotlib, Agg backend; nothing shown on screen).

Every function takes plain numbers from ``report.json`` and a path, so a report can be re-plotted
without re-running anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontier_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    singles: Mapping[str, tuple[float, float]],
    hull: tuple[Sequence[float], Sequence[float]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Accuracy against mean cost per query: router frontiers, single models and their hull."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, (cost, acc) in curves.items():
        ax.plot(cost, acc, marker=".", ms=3, lw=1.5, label=name)
    for name, (c, a) in singles.items():
        ax.scatter([c], [a], s=14, color="grey", zorder=3)
        ax.annotate(
            name, (c, a), fontsize=6, color="dimgrey", xytext=(2, 2), textcoords="offset points"
        )
    # The hull is linear in cost; sample it densely so it is drawn truly on the log axis.
    import numpy as np

    hc, ha = np.asarray(hull[0], dtype=float), np.asarray(hull[1], dtype=float)
    xs = np.geomspace(hc[0], hc[-1], 200) if len(hc) > 1 and hc[0] > 0 else hc
    ax.plot(xs, np.interp(xs, hc, ha), ls="--", color="black", lw=1, label="single-model hull")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def lines_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    hlines: Mapping[str, float] | None = None,
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", ms=4, label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="grey")
        ax.annotate(
            name, (x[0], y), fontsize=7, color="dimgrey", xytext=(0, 3), textcoords="offset points"
        )
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def scatter_plot(
    x: Sequence[float],
    y: Sequence[float],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    if groups is None:
        ax.scatter(x, y, s=12, alpha=0.7)
    else:
        for g in sorted(set(groups)):
            idx = [i for i, gi in enumerate(groups) if gi == g]
            ax.scatter([x[i] for i in idx], [y[i] for i in idx], s=28, label=g)
        ax.legend(fontsize=8)
    for i, name in enumerate(labels or []):
        ax.annotate(name, (x[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
