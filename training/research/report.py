"""The report every research job writes: ``report.json`` with claims, and ``summary.md``.

A claim is one of the paper's qualitative results, checked over seeds, with the figures that
decide it. ``holds`` is computed by the job from those figures with a rule stated in the claim's
``rule`` text; nothing here decides a claim.

Usage::

    claims = [Claim("speedup", "samples fall as 1/M", holds=slope < -0.7,
                    figures={"slope": slope}, rule="log-log slope < -0.7")]
    write_report(out, job="avg-reward-q", config=asdict(cfg), claims=claims,
                 results=results, seconds=t, plots=["speedup.png"])
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Claim:
    """One qualitative result of the paper and whether it held here."""

    id: str
    statement: str
    holds: bool
    figures: dict[str, Any]
    rule: str = ""
    figures_plot: list[str] = field(default_factory=list)


def jsonable(x: Any) -> Any:
    """numpy scalars and arrays, tuples and non-finite floats made JSON-safe (NaN/inf -> None)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def mean_std(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "n": int(len(a)),
    }


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (both positive)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list) and len(v) <= 8:
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, list):
        return f"[{len(v)} values]"
    return str(v)


def summary_markdown(
    job: str, claims: Sequence[Claim], *, notes: Sequence[str] = (), plots: Sequence[str] = ()
) -> str:
    held = sum(c.holds for c in claims)
    lines = [f"# `{job}`: {held} of {len(claims)} claims hold", ""]
    lines += ["| claim | holds | statement | rule |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| `{c.id}` | {'yes' if c.holds else '**no**'} | {c.statement} | {c.rule} |")
    lines.append("")
    for c in claims:
        lines.append(f"## `{c.id}`: {'holds' if c.holds else 'does NOT hold'}")
        lines.append("")
        lines.append(c.statement)
        lines.append("")
        for k, v in jsonable(c.figures).items():
            lines.append(f"- {k}: {_fmt(v)}")
        for p in c.figures_plot:
            lines.append(f"\n![{p}]({p})")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    rest = [p for p in plots if not any(p in c.figures_plot for c in claims)]
    lines += [f"![{p}]({p})" for p in rest]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    *,
    job: str,
    config: Any,
    claims: Sequence[Claim],
    results: dict[str, Any],
    seconds: float,
    seeds: Sequence[int],
    quick: bool,
    notes: Sequence[str] = (),
    plots: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``out/report.json`` and ``out/summary.md``; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "job": job,
        "quick": quick,
        "seeds": list(seeds),
        "config": config,
        "claims": [
            {
                "id": c.id,
                "statement": c.statement,
                "holds": bool(c.holds),
                "rule": c.rule,
                "figures": c.figures,
                "plots": c.figures_plot,
            }
            for c in claims
        ],
        "results": results,
        "notes": list(notes),
        "plots": list(plots),
        "seconds": seconds,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }
    report = jsonable(report)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "summary.md").write_text(summary_markdown(job, claims, notes=notes, plots=plots))
    return report


def plt_module() -> Any:
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write (110 dpi) and close one figure of a research report."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt_module().close(fig)
