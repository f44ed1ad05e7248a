"""The cost knob: presets and cost targets turned into a ``lambda`` on a held-out query sample.

``routing.lambda`` is in accuracy per US dollar per request, which nobody can guess (a request to
the shipped MMLU-Pro pool costs 3e-5 to 5e-5 USD, so ``lambda: 10`` changes nothing; the presets
below land in the thousands). Callers state what they want instead, and the gateway finds
the lambda that does it on a calibration sample of queries no router was trained on (by default
MMLU-Pro's 1,203 validation questions and their stored embeddings), scored by the active router
against the current candidates:

- ``mode``: ``quality`` is lambda 0 (the highest predicted accuracy). ``balanced`` and ``cost`` are
  the largest lambda (the lowest cost) whose predicted mean accuracy on the sample is at least
  95% and 80% of quality mode's (``MODE_QUALITY``).
- ``target_cost_per_1k_usd``: the lambda whose mean cost per 1,000 requests on the sample is
  nearest the target (bisection over log lambda). The cost counted is what each choice is billed
  where the sample has the chosen model's recorded answer (its real completion tokens), else the
  expected cost (the model's mean completion tokens). A target above quality mode's cost gives
  lambda 0 (it never spends more to spend the budget); one below the cheapest reachable cost is a
  400.

Per query, as lambda grows the chosen model's expected cost and predicted accuracy never rise, so
the sample means of both are non-increasing step functions and bisection finds the step; the
billed mean follows them closely but not exactly (a cheaper model can write a longer answer).

Usage::

    curve = Curve.build(p, cost)                 # p, cost: [N, M] over the calibration sample
    lam = curve.lambda_for_cost(0.25 / 1000)     # mean cost per request 0.00025 USD
    lam = curve.lambda_for_quality(0.95)         # "balanced"
    idx = choose(p, cost, lam)                   # [N] chosen column per query
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Mode = Literal["quality", "balanced", "cost"]
# Share of quality mode's predicted accuracy each preset keeps, at the lowest cost that keeps it.
MODE_QUALITY: dict[str, float] = {"quality": 1.0, "balanced": 0.95, "cost": 0.80}
DEFAULT_SAMPLE = 2048  # all of MMLU-Pro's 1,203 validation questions; sampling error ~2%
_BISECT_STEPS = 64


def choose(p: npt.ArrayLike, cost: npt.ArrayLike, lam: float) -> npt.NDArray[np.int64]:
    """Per row, the column maximising p - lam * cost (ties: the cheaper, then the first column).

    ``cost`` may hold ``inf`` for a candidate that is not allowed on that row (over a cap).
    """
    P = np.asarray(p, dtype=np.float64)
    C = np.asarray(cost, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        u = np.where(np.isfinite(C), P - lam * np.where(np.isfinite(C), C, 0.0), -np.inf)
    best = u.max(axis=1, keepdims=True)
    tied = np.where(u >= best, C, np.inf)
    return np.asarray(tied.argmin(axis=1), dtype=np.int64)


@dataclass(frozen=True)
class Curve:
    """The calibration sample's p_correct and expected costs for one candidate set."""

    p: npt.NDArray[np.float64]  # [N, M]
    cost: npt.NDArray[np.float64]  # [N, M] expected cost, what decides; inf: not allowed
    spend: npt.NDArray[np.float64]  # [N, M] what the choice is billed, what targets count

    @classmethod
    def build(
        cls, p: npt.ArrayLike, cost: npt.ArrayLike, spend: npt.ArrayLike | None = None
    ) -> Curve:
        """``spend``: the cost each choice is really billed where known (a calibration query's
        recorded answer: its real completion tokens), else the expected ``cost``."""
        P = np.asarray(p, dtype=np.float64)
        C = np.asarray(cost, dtype=np.float64)
        if P.shape != C.shape or P.ndim != 2 or P.shape[1] == 0:
            raise ValueError(f"p {P.shape} and cost {C.shape} must be the same [N, M], M >= 1")
        S = C if spend is None else np.asarray(spend, dtype=np.float64)
        S = np.where(np.isfinite(S), S, C)
        keep = np.isfinite(C).any(axis=1)  # rows where something is allowed
        return cls(P[keep], C[keep], S[keep])

    @property
    def size(self) -> int:
        return int(self.p.shape[0])

    def at(self, lam: float) -> tuple[float, float]:
        """(mean billed cost per request, mean predicted accuracy) of the choices at ``lam``."""
        if self.size == 0:
            return 0.0, 0.0
        idx = choose(self.p, self.cost, lam)
        rows = np.arange(self.size)
        return float(self.spend[rows, idx].mean()), float(self.p[rows, idx].mean())

    def _lambda_range(self) -> tuple[float, float]:
        """(lo, hi): at lo cost is negligible next to p (lam * cost <= 1e-6 on every row); at hi
        every row takes its cheapest allowed candidate."""
        if self.size == 0:
            return 1.0, 1.0
        C = np.where(np.isfinite(self.cost), self.cost, np.nan)
        top = float(np.nanmax(C))
        lo = 1e-6 / max(top, 1e-300)
        diffs = np.abs(C[:, :, None] - C[:, None, :])
        positive = diffs[np.isfinite(diffs) & (diffs > 0)]
        step = float(positive.min()) if positive.size else 1.0
        return lo, max(2.0 / step, lo * 2)

    def min_cost(self) -> float:
        """The lowest reachable mean cost: every row on its cheapest allowed candidate (by
        expected cost, counted at what it is billed)."""
        return self.at(self._lambda_range()[1])[0] if self.size else 0.0

    def _bracket(self, holds: Callable[[float], bool]) -> tuple[float, float]:
        """(a, b) with ``holds(a)`` true and ``holds(b)`` false, adjacent up to 64 halvings of the
        log range, for a predicate that is true at small lambda and false past some point.
        (a, a) when it holds everywhere; (0, lo) when it fails at every lambda above 0."""
        lo, hi = self._lambda_range()
        if holds(hi):
            return hi, hi
        if not holds(lo):
            return 0.0, lo
        a, b = math.log(lo), math.log(hi)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (a + b)
            if holds(math.exp(mid)):
                a = mid
            else:
                b = mid
        return math.exp(a), math.exp(b)

    def lambda_for_cost(self, target: float) -> float:
        """The lambda whose mean expected cost per request on the sample is nearest ``target``.

        Raises ``ValueError`` when the target is below the cheapest reachable mean cost.
        """
        floor = self.min_cost()
        if target < floor * (1 - 1e-9):
            raise ValueError(
                f"below the cheapest reachable mean cost of these candidates on the calibration "
                f"sample, {floor * 1000:.4g} USD per 1,000 requests"
            )
        if self.at(0.0)[0] <= target:
            return 0.0
        above, below = self._bracket(lambda lam: self.at(lam)[0] > target)
        if above == below:
            return above
        c_above, c_below = self.at(above)[0], self.at(below)[0]
        return above if abs(c_above - target) < abs(c_below - target) else below

    def lambda_for_quality(self, share: float) -> float:
        """The largest lambda keeping ``share`` of lambda 0's mean predicted accuracy."""
        if share >= 1.0:
            return 0.0
        thr = share * self.at(0.0)[1]
        return self._bracket(lambda lam: self.at(lam)[1] >= thr)[0]


@dataclass(frozen=True)
class Sample:
    """Calibration queries: texts, and their stored MiniLM embeddings when a data set has them."""

    texts: list[str]
    embeddings: npt.NDArray[np.float32] | None = None  # [N, D]
    dataset: str | None = None  # the data set the queries come from, with recorded answers
    query_ids: list[str] | None = None


def sample_queries(source: str | Path, *, size: int = DEFAULT_SAMPLE, seed: int = 0) -> Sample:
    """A fixed sample of calibration queries (``size`` of them, drawn with ``seed``).

    ``source``: a data-set name (``mmlu_pro``, ``routerbench``: its validation-split questions,
    with the query embeddings stored beside them, the ones the routers were trained on), or a
    file of the operator's own traffic (JSONL with a ``query`` field per line, or plain text, one
    query per line), which the gateway's encoder embeds.
    """
    src = str(source)
    X: npt.NDArray[np.float32] | None = None
    if src in ("mmlu_pro", "routerbench"):
        import pyarrow.parquet as pq

        from training.data.build import DERIVED

        table = pq.read_table(DERIVED / src / "questions.parquet")
        splits = table.column("split").to_pylist()
        order = sorted(
            (i for i, s in enumerate(splits) if s == "val"),
            key=lambda i: str(table.column("query_id")[i]),
        )
        queries = [str(table.column("query")[i]) for i in order]
        ids: list[str] | None = [str(table.column("query_id")[i]) for i in order]
        if "embedding" in table.column_names:
            emb = table.column("embedding").combine_chunks()
            flat = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32)
            X = flat.reshape(len(table), -1)[order]
    else:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"calibration queries: no data set or file named {src!r}")
        queries = _read_query_file(path)
        ids = None
    if not queries:
        raise ValueError(f"calibration queries: {src!r} holds none")
    if len(queries) > size:
        pick = np.sort(np.random.default_rng(seed).choice(len(queries), size=size, replace=False))
        queries = [queries[i] for i in pick]
        X = None if X is None else X[pick]
        ids = None if ids is None else [ids[i] for i in pick]
    return Sample(queries, X, src if ids is not None else None, ids)


def recorded_completion_tokens(sample: Sample, models: Sequence[str]) -> npt.NDArray[np.float64]:
    """[N, M] completion tokens of each model's recorded answer to each calibration query (the
    data set's evaluation log); NaN where the model has none (any model not in the data set)."""
    out = np.full((len(sample.texts), len(models)), np.nan)
    if sample.dataset is None or sample.query_ids is None:
        return out
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from training.data.build import DERIVED

    t = pq.read_table(
        DERIVED / sample.dataset / "evals.parquet",
        columns=["query_id", "model", "completion_tokens"],
    )
    t = t.filter(
        pc.is_in(pc.cast(t.column("query_id"), "string"), value_set=pa_strings(sample.query_ids))
    )
    row = {q: i for i, q in enumerate(sample.query_ids)}
    col = {m: j for j, m in enumerate(models)}
    for q, m, n in zip(
        t.column("query_id").to_pylist(),
        t.column("model").to_pylist(),
        t.column("completion_tokens").to_pylist(),
        strict=True,
    ):
        j = col.get(str(m))
        if j is not None and n is not None:
            out[row[str(q)], j] = float(n)
    return out


def pa_strings(xs: Sequence[str]) -> object:
    import pyarrow as pa

    return pa.array(list(xs), type=pa.string())


def _read_query_file(path: Path) -> list[str]:
    import json

    out: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            q = json.loads(line).get("query")
            if isinstance(q, str) and q.strip():
                out.append(q)
        else:
            out.append(line)
    return list(dict.fromkeys(out))


def describe(curve: Curve, lam: float) -> dict[str, float]:
    """What a lambda means on the sample: predicted cost per 1,000 requests and accuracy."""
    c, a = curve.at(lam)
    return {
        "lambda": lam,
        "predicted_cost_per_1k_usd": c * 1000.0,
        "predicted_accuracy": a,
        "sample_size": float(curve.size),
    }


def names_key(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(names)
