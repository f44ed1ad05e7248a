"""Load derived data sets and arbitrary evaluation logs as :class:`EvalMatrix`.

Usage::

    m = load_matrix("mmlu_pro")                 # committed derived files
    m = load_matrix("logs/my_evals.jsonl")      # any evaluation log (JSONL/CSV/Parquet)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from training.data.build import DATASETS, DERIVED
from training.data.matrix import EvalMatrix
from training.data.prices import price_of
from training.data.schema import EvalRow, read_log

Encode = Callable[[list[str]], np.ndarray]


def _embeddings(table_column: object) -> np.ndarray:
    col = table_column.combine_chunks()  # type: ignore[attr-defined]
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def load_derived(dataset: str, derived: Path = DERIVED) -> EvalMatrix:
    folder = derived / dataset
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"{folder} has no derived data: run `junction data build`")
    meta = json.loads((folder / "meta.json").read_text())
    q = pq.read_table(folder / "questions.parquet")
    qids = np.array(q.column("query_id").to_pylist(), dtype=str)
    ev = pq.read_table(folder / "evals.parquet").to_pandas()
    models = list(meta["models"])
    row = {qid: i for i, qid in enumerate(qids)}
    col = {m: j for j, m in enumerate(models)}
    r = ev["query_id"].astype(str).map(row).to_numpy()
    c = ev["model"].astype(str).map(col).to_numpy()
    shape = (len(qids), len(models))

    def dense(name: str) -> np.ndarray:
        out = np.full(shape, np.nan, dtype=np.float32)
        out[r, c] = ev[name].to_numpy(dtype=np.float32)
        return out

    return EvalMatrix(
        dataset=dataset,
        query_ids=qids,
        queries=[str(t) for t in q.column("query").to_pylist()],
        categories=np.array(q.column("category").to_pylist(), dtype=str),
        split=np.array(q.column("split").to_pylist(), dtype=str),
        embeddings=_embeddings(q.column("embedding")),
        models=models,
        scores=dense("score"),
        cost_usd=dense("cost_usd"),
        prompt_tokens=dense("prompt_tokens"),
        completion_tokens=dense("completion_tokens"),
        meta=meta,
    )


def matrix_from_rows(
    rows: Sequence[EvalRow],
    *,
    dataset: str = "log",
    encode: Encode | None = None,
    seed: int = 0,
    test_frac: float = 0.2,
    val_frac: float = 0.1,
) -> EvalMatrix:
    """Pivot evaluation-log rows into a matrix; texts without embeddings are encoded with ``encode``.

    Costs missing from a row are computed from the price table. Questions are split train/val/test
    with a seeded permutation. A query's text and embedding are taken from its first row.
    """
    if not rows:
        raise ValueError("empty evaluation log")
    qids = list(dict.fromkeys(r.query_id for r in rows))
    models = sorted({r.model for r in rows})
    first: dict[str, EvalRow] = {}
    for r in rows:
        first.setdefault(r.query_id, r)
    need_text = [q for q in qids if first[q].embedding is None]
    dims = {len(first[q].embedding or ()) for q in qids if first[q].embedding is not None}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different lengths in the log: {sorted(dims)}")
    emb: dict[str, np.ndarray] = {
        q: np.asarray(first[q].embedding, dtype=np.float32)
        for q in qids
        if first[q].embedding is not None
    }
    if need_text:
        if encode is None:
            from training.encoder import QueryEncoder

            encoder = QueryEncoder()
            encode = encoder.encode
        X = encode([first[q].query or "" for q in need_text])
        emb.update(zip(need_text, X, strict=True))
    shape = (len(qids), len(models))
    arrays = {k: np.full(shape, np.nan, dtype=np.float32) for k in ("s", "c", "p", "t")}
    ri = {q: i for i, q in enumerate(qids)}
    ci = {m: j for j, m in enumerate(models)}
    for r in rows:
        i, j = ri[r.query_id], ci[r.model]
        cost = r.cost_usd
        if cost is None:
            cost = price_of(r.model).cost_usd(r.prompt_tokens, r.completion_tokens)
        arrays["s"][i, j] = r.score
        arrays["c"][i, j] = cost
        arrays["p"][i, j] = r.prompt_tokens
        arrays["t"][i, j] = r.completion_tokens
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(qids))
    split = np.full(len(qids), "train", dtype="<U5")
    n_test, n_val = round(len(qids) * test_frac), round(len(qids) * val_frac)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    return EvalMatrix(
        dataset=dataset,
        query_ids=np.array(qids, dtype=str),
        queries=[first[q].query or "" for q in qids],
        categories=np.array([first[q].category or "" for q in qids], dtype=str),
        split=split,
        embeddings=np.stack([emb[q] for q in qids]).astype(np.float32),
        models=models,
        scores=arrays["s"],
        cost_usd=arrays["c"],
        prompt_tokens=arrays["p"],
        completion_tokens=arrays["t"],
        meta={
            "dataset": dataset,
            "models": models,
            "seen_models": models,
            "unseen_models": [],
            "seed": seed,
        },
    )


def load_matrix(name_or_path: str | Path, *, encode: Encode | None = None) -> EvalMatrix:
    """A built-in data set by name (``mmlu_pro``, ``routerbench``) or any evaluation-log file."""
    if str(name_or_path) in DATASETS:
        return load_derived(str(name_or_path))
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such evaluation log (or data set name; known: {DATASETS})"
        )
    return matrix_from_rows(read_log(path), dataset=path.stem, encode=encode)
