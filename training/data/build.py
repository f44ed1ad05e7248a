"""``junction data build``: compact derived files (Parquet) from the raw data in ../shared/data.

For each data set it writes, under ``training/data/derived/<dataset>/``:

- ``questions.parquet``: query_id, query text, category, split, embedding (float16, MiniLM);
- ``evals.parquet``: the evaluation log (query_id, model, score, prompt_tokens, completion_tokens,
  cost_usd), the schema of ``schema.py`` minus the text columns;
- ``meta.json``: models, seen/unseen models, split seed and sizes, skip counts, sources;
- ``replay.parquet`` (MMLU-Pro): each model's recorded response to every test-split question, for
  the gateway's clearly labelled replay backend.

Splits are fixed and seeded: questions into train/validation/test (70/10/20 for MMLU-Pro; RouterBench
keeps its own train/test files and carves validation from train), and the MMLU-Pro models into 18
seen and 4 unseen models that are held out of all training, for onboarding experiments.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.mmlu_pro import query_text, read_mmlu_pro_dir
from training.data.prices import price_of
from training.data.routerbench import read_routerbench_csv
from training.data.tokens import count_tokens

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DERIVED = Path(__file__).resolve().parent / "derived"
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = REPO / "cache" / "embeddings.sqlite"
DATASETS = ("mmlu_pro", "routerbench")

Encode = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    test_frac: float = 0.2
    val_frac: float = 0.1
    num_unseen: int = 4


def _embedding_column(X: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(X.astype(np.float16).reshape(-1), type=pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, X.shape[1])


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", compression_level=9)


def _split(n: int, rng: np.random.Generator, test_frac: float, val_frac: float) -> np.ndarray:
    order = rng.permutation(n)
    split = np.full(n, "train", dtype=object)
    n_test, n_val = round(n * test_frac), round(n * val_frac)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    return split


def build_mmlu_pro(src: Path, out: Path, encode: Encode, cfg: BuildConfig) -> dict[str, object]:
    t0 = time.time()
    questions: dict[str, tuple[str, str]] = {}  # qid -> (query text, category)
    evals: dict[str, list[object]] = {k: [] for k in ("query_id", "model", "score", "response")}
    skipped: dict[str, int] = {}
    models: list[str] = []
    for outputs in read_mmlu_pro_dir(src):
        models.append(outputs.model)
        skipped[outputs.model] = outputs.skipped
        for r in outputs.records:
            questions.setdefault(r.question_id, (query_text(r.question, r.options), r.category))
            evals["query_id"].append(r.question_id)
            evals["model"].append(outputs.model)
            evals["score"].append(1.0 if r.correct else 0.0)
            evals["response"].append(r.response)
        log.info(
            "read %s: %d records, %d skipped", outputs.model, len(outputs.records), outputs.skipped
        )
    qids = sorted(questions, key=int)
    texts = [questions[q][0] for q in qids]
    rng = np.random.default_rng(cfg.seed)
    split = _split(len(qids), rng, cfg.test_frac, cfg.val_frac)
    unseen = sorted(rng.choice(sorted(models), size=cfg.num_unseen, replace=False).tolist())
    seen = [m for m in sorted(models) if m not in unseen]

    prompt_tokens = dict(zip(qids, count_tokens(texts), strict=True))
    responses = [str(r) for r in evals["response"]]
    completion = count_tokens(responses)
    ev_prompt = [prompt_tokens[str(q)] for q in evals["query_id"]]
    cost = [
        price_of(str(m)).cost_usd(p, c)
        for m, p, c in zip(evals["model"], ev_prompt, completion, strict=True)
    ]
    log.info("encoding %d questions", len(texts))
    X = encode(texts)
    _write(
        pa.table(
            {
                "query_id": qids,
                "query": texts,
                "category": [questions[q][1] for q in qids],
                "split": split.tolist(),
                "embedding": _embedding_column(X),
            }
        ),
        out / "questions.parquet",
    )
    _write(
        pa.table(
            {
                "query_id": pa.array(evals["query_id"]).dictionary_encode(),
                "model": pa.array(evals["model"]).dictionary_encode(),
                "score": pa.array(evals["score"], type=pa.float32()),
                "prompt_tokens": pa.array(ev_prompt, type=pa.int32()),
                "completion_tokens": pa.array(completion, type=pa.int32()),
                "cost_usd": pa.array(cost, type=pa.float64()),
            }
        ),
        out / "evals.parquet",
    )
    test_ids = {q for q, s in zip(qids, split, strict=True) if s == "test"}
    keep = [i for i, q in enumerate(evals["query_id"]) if q in test_ids]
    _write(
        pa.table(
            {
                "query_id": [evals["query_id"][i] for i in keep],
                "model": pa.array([evals["model"][i] for i in keep]).dictionary_encode(),
                "response": [responses[i] for i in keep],
                "completion_tokens": pa.array([completion[i] for i in keep], type=pa.int32()),
            }
        ),
        out / "replay.parquet",
    )
    meta: dict[str, object] = {
        "dataset": "mmlu_pro",
        "source": str(src.name),
        "models": sorted(models),
        "seen_models": seen,
        "unseen_models": unseen,
        "seed": cfg.seed,
        "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "num_evaluations": len(evals["score"]),
        "skipped_entries": skipped,
        "correct_rule": "pred == answer; a missing prediction counts as wrong",
        "query_text": "question, a blank line, then one 'X. option' line per option",
        "tokenizer": "SmolLM2 BPE from its GGUF (training/data/tokens.py)",
        "costs": "price table (training/data/PRICES.md)",
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def build_routerbench(src: Path, out: Path, encode: Encode, cfg: BuildConfig) -> dict[str, object]:
    t0 = time.time()
    rows: list[tuple[str, str, str, str, dict[str, float], dict[str, float], dict[str, str]]] = []
    missing = 0
    models: list[str] = []
    for path in sorted(src.glob("*.csv")):
        table = read_routerbench_csv(path)
        missing += table.missing_cells
        models = models or sorted(table.models)
        file_split = "test" if path.stem.endswith("_test") else "train"
        for r in table.rows:
            rows.append(
                (r.sample_id, r.prompt, r.eval_name, file_split, r.scores, r.costs, r.responses)
            )
    # A sample id can occur twice (within a file or in both train and test files): keep both rows
    # as distinct queries with a suffix, and report the count.
    counts: dict[str, int] = {}
    qids: list[str] = []
    for sid, *_ in rows:
        counts[sid] = counts.get(sid, 0) + 1
        qids.append(sid if counts[sid] == 1 else f"{sid}#{counts[sid]}")
    duplicates = sum(c - 1 for c in counts.values())
    rng = np.random.default_rng(cfg.seed)
    split = np.array([r[3] for r in rows], dtype=object)
    train_idx = np.flatnonzero(split == "train")
    n_val = round(len(train_idx) * cfg.val_frac / (1 - cfg.test_frac))
    split[rng.permutation(train_idx)[:n_val]] = "val"

    texts = [r[1] for r in rows]
    ptoks = count_tokens(texts)
    ev: dict[str, list[object]] = {
        k: [] for k in ("query_id", "model", "score", "pt", "ct", "cost")
    }
    for qid, (_, _, _, _, scores, costs, responses), pt in zip(qids, rows, ptoks, strict=True):
        names = sorted(scores)
        for m, ct in zip(names, count_tokens([responses[m] for m in names]), strict=True):
            ev["query_id"].append(qid)
            ev["model"].append(m)
            ev["score"].append(scores[m])
            ev["pt"].append(pt)
            ev["ct"].append(ct)
            ev["cost"].append(costs[m])
    X = encode(texts)
    _write(
        pa.table(
            {
                "query_id": qids,
                "query": texts,
                "category": [r[2] for r in rows],
                "split": split.tolist(),
                "embedding": _embedding_column(X),
            }
        ),
        out / "questions.parquet",
    )
    _write(
        pa.table(
            {
                "query_id": pa.array(ev["query_id"]).dictionary_encode(),
                "model": pa.array(ev["model"]).dictionary_encode(),
                "score": pa.array(ev["score"], type=pa.float32()),
                "prompt_tokens": pa.array(ev["pt"], type=pa.int32()),
                "completion_tokens": pa.array(ev["ct"], type=pa.int32()),
                "cost_usd": pa.array(ev["cost"], type=pa.float64()),
            }
        ),
        out / "evals.parquet",
    )
    meta: dict[str, object] = {
        "dataset": "routerbench",
        "source": str(src.name),
        "models": models,
        "seen_models": models,
        "unseen_models": [],
        "seed": cfg.seed,
        "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "num_evaluations": len(ev["score"]),
        "missing_cells": missing,
        "duplicate_sample_ids": duplicates,
        "query_text": "the prompt cell (list literal parts joined by newlines)",
        "tokenizer": "SmolLM2 BPE from its GGUF (training/data/tokens.py)",
        "costs": "RouterBench's own recorded USD cost per row",
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


BUILDERS = {
    "mmlu_pro": (build_mmlu_pro, "mmlu_pro"),
    "routerbench": (build_routerbench, "routerbench_subset"),
}


def is_built(dataset: str, derived: Path = DERIVED) -> bool:
    return all(
        (derived / dataset / f).exists()
        for f in ("questions.parquet", "evals.parquet", "meta.json")
    )


def build(
    datasets: tuple[str, ...] = DATASETS,
    *,
    src_root: Path = SHARED_DATA,
    derived: Path = DERIVED,
    encode: Encode | None = None,
    if_missing: bool = False,
    cfg: BuildConfig | None = None,
) -> dict[str, dict[str, object]]:
    cfg = cfg or BuildConfig()
    if encode is None:
        from training.encoder import QueryEncoder

        encoder = QueryEncoder(cache_path=DEFAULT_CACHE)

        def encode(texts: list[str]) -> np.ndarray:
            return encoder.encode(texts, show_progress=True)

    results: dict[str, dict[str, object]] = {}
    for name in datasets:
        if if_missing and is_built(name, derived):
            log.info("%s: derived files present, skipping", name)
            continue
        fn, folder = BUILDERS[name]
        src = src_root / folder
        if not src.exists():
            raise FileNotFoundError(f"raw data for {name} not found at {src}")
        results[name] = fn(src, derived / name, encode, cfg)
    return results
