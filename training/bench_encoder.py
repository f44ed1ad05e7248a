"""``junction bench encoder``: how fast the query encoder runs on CPU, per backend and input length.

Backends: torch fp32 (the reference), torch bf16 (``torch.autocast``) and the int8 ONNX model of
``training.fast_encoder``. For inputs of about 16, 64 and 256 tokens it measures the latency of one
query per call (p50/p99, tokenisation included, as the gateway sees it), the throughput at batch 64,
and the cosine of each backend's vectors to fp32. Figures are printed (and written as JSON with
``--out``), never asserted: they depend on the machine and on what else runs on it.

Texts are real MMLU-Pro questions cut to length when the derived data is there, generated sentences
otherwise.

Usage::

    junction bench encoder --threads 2 --out reports/bench_encoder.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.config_cli import add_dataclass_args, dataclass_from_args
from training.encoder import model_dir

QUESTIONS = Path(__file__).parent / "data" / "derived" / "mmlu_pro" / "questions.parquet"
BACKENDS = ("torch-fp32", "torch-bf16", "onnx-int8")
Encode = Callable[[list[str]], npt.NDArray[np.float32]]


@dataclass
class EncoderBenchConfig:
    """Knobs of the encoder benchmark. Lengths are set from code: ``lengths=(16, 64, 256)``."""

    backends: str = field(
        default=",".join(BACKENDS), metadata={"help": f"comma-separated, from {BACKENDS}"}
    )
    lengths: tuple[int, ...] = (16, 64, 256)
    queries: int = field(
        default=200, metadata={"help": "timed single-query calls per backend and length"}
    )
    batch_size: int = field(default=64, metadata={"help": "batch size for the throughput figure"})
    batches: int = field(default=3, metadata={"help": "timed batches per backend and length"})
    rounds: int = field(
        default=4,
        metadata={"help": "backends take turns this many times, so load from others hits all"},
    )
    threads: int = field(
        default=1,
        metadata={
            "help": "CPU threads for torch and onnxruntime's intra-op pool (more than the idle "
            "cores makes torch spin-wait: 2 threads on a busy 2-core box were 3-80x slower)"
        },
    )
    seed: int = field(default=0, metadata={"help": "which questions are drawn"})
    out: str = field(default="", metadata={"help": "write the results here as JSON"})

    def __post_init__(self) -> None:
        unknown = set(self.backend_list) - set(BACKENDS)
        if unknown or not self.backend_list:
            raise ValueError(f"backends must come from {BACKENDS}, got {self.backends!r}")
        if min(self.lengths) < 4 or max(self.lengths) > 512:
            raise ValueError(f"lengths must be in [4, 512] tokens, got {self.lengths}")
        if min(self.queries, self.batch_size, self.batches, self.rounds, self.threads) < 1:
            raise ValueError("queries, batch_size, batches, rounds and threads must be >= 1")

    @property
    def backend_list(self) -> list[str]:
        return [b.strip() for b in self.backends.split(",") if b.strip()]


def _source_texts(n: int, seed: int) -> list[str]:
    """Real questions when the derived data exists, else generated multi-sentence texts."""
    if QUESTIONS.exists():
        import pandas as pd

        queries = pd.read_parquet(QUESTIONS, columns=["query"])["query"]
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(queries), size=min(n, len(queries)), replace=False)
        return [str(queries.iloc[int(i)]) for i in picks]
    subjects = ["The router", "A small model", "The gateway", "Our evaluation", "The cache"]
    verbs = ["scores", "compares", "forwards", "measures", "stores"]
    objects = ["each incoming query", "the cheapest model", "latency percentiles", "token costs"]
    return [
        " ".join(
            f"{subjects[(i + j) % 5]} {verbs[(i * 3 + j) % 5]} {objects[(i + 2 * j) % 4]} "
            f"in step {i * 40 + j}."
            for j in range(60)
        )
        for i in range(n)
    ]


def texts_of_length(tokens: int, n: int, *, seed: int = 0) -> list[str]:
    """``n`` texts that tokenise to exactly ``tokens`` tokens (special tokens included).

    Each is a prefix of a source text, cut at a token boundary; sources shorter than the target
    are joined with the next one.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    sources = _source_texts(4 * n, seed)
    out: list[str] = []
    i = 0
    while len(out) < n:
        text = sources[i % len(sources)]
        while len(tok.encode(text).ids) < tokens:
            i += 1
            text += "\n\n" + sources[i % len(sources)]
        i += 1
        offsets = tok.encode(text, add_special_tokens=False).offsets
        out.append(text[: offsets[tokens - 3][1]])  # two special tokens: [CLS] ... [SEP]
    return out


def _encoders(backends: Sequence[str], threads: int) -> dict[str, Encode]:
    import torch

    torch.set_num_threads(threads)
    encoders: dict[str, Encode] = {}
    if any(b.startswith("torch") for b in backends):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir()), device="cpu")
        model.max_seq_length = 256

        def fp32(texts: list[str]) -> npt.NDArray[np.float32]:
            return np.asarray(
                model.encode(
                    texts,
                    batch_size=len(texts),
                    normalize_embeddings=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            )

        def bf16(texts: list[str]) -> npt.NDArray[np.float32]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fp32(texts)

        encoders["torch-fp32"] = fp32
        encoders["torch-bf16"] = bf16
    if "onnx-int8" in backends:
        from training.fast_encoder import OnnxMiniLM

        onnx = OnnxMiniLM(max_seq_length=256, intra_op_threads=threads)
        encoders["onnx-int8"] = lambda texts: onnx.encode(texts, batch_size=len(texts))
    return {b: encoders[b] for b in backends}


def _time(encode: Encode, texts: list[str]) -> float:
    start = time.perf_counter()
    encode(texts)
    return time.perf_counter() - start


def run_encoder_bench(cfg: EncoderBenchConfig | None = None) -> dict[str, Any]:
    """Measure every backend at every length; returns ``{"config", "environment", "results"}``.

    Each result row: backend, tokens, p50_ms, p99_ms, texts_per_s, cos_mean and cos_min (to
    torch fp32 when it is measured), and the ratios p50 and throughput against torch fp32.
    """
    cfg = cfg or EncoderBenchConfig()
    backends = cfg.backend_list
    encoders = _encoders(backends, cfg.threads)
    rows: list[dict[str, Any]] = []
    for tokens in cfg.lengths:
        singles = texts_of_length(tokens, 32, seed=cfg.seed)
        batch = texts_of_length(tokens, cfg.batch_size, seed=cfg.seed + 1)
        latency: dict[str, list[float]] = {b: [] for b in backends}
        batch_s: dict[str, list[float]] = {b: [] for b in backends}
        vectors = {b: encoders[b](batch) for b in backends}  # also the warm-up
        for enc in encoders.values():
            for text in singles[:5]:
                enc([text])
        # Round r runs calls r, r + rounds, ...: the backends take turns under the same load.
        for r in range(cfg.rounds):
            for b in backends:
                for q in range(r, cfg.queries, cfg.rounds):
                    latency[b].append(_time(encoders[b], [singles[q % len(singles)]]))
                for _ in range(r, cfg.batches, cfg.rounds):
                    batch_s[b].append(_time(encoders[b], batch))
        for b in backends:
            ms = np.asarray(latency[b]) * 1e3
            row: dict[str, Any] = {
                "backend": b,
                "tokens": tokens,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "texts_per_s": float(len(batch) / np.median(batch_s[b])),
            }
            if "torch-fp32" in vectors:
                cos = np.sum(vectors[b] * vectors["torch-fp32"], axis=1)
                row |= {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
            rows.append(row)
        if "torch-fp32" in backends:
            ref = next(r for r in rows if r["tokens"] == tokens and r["backend"] == "torch-fp32")
            for row in rows:
                if row["tokens"] == tokens:
                    row["p50_vs_fp32"] = ref["p50_ms"] / row["p50_ms"]
                    row["throughput_vs_fp32"] = row["texts_per_s"] / ref["texts_per_s"]
    return {"config": asdict(cfg), "environment": _environment(cfg.threads), "results": rows}


def _environment(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "machine": platform.machine(),
        "texts": "mmlu_pro questions" if QUESTIONS.exists() else "generated sentences",
    }


def format_table(report: dict[str, Any]) -> str:
    """The results as a fixed-width table; speed-ups are against torch fp32 at the same length."""
    head = (
        f"{'backend':<11} {'tokens':>6} {'p50 ms':>8} {'p99 ms':>8} {'x fp32':>7} "
        f"{'texts/s':>8} {'x fp32':>7} {'cos mean':>9} {'cos min':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        lines.append(
            f"{r['backend']:<11} {r['tokens']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r.get('p50_vs_fp32', float('nan')):>7.2f} {r['texts_per_s']:>8.1f} "
            f"{r.get('throughput_vs_fp32', float('nan')):>7.2f} "
            f"{r.get('cos_mean', float('nan')):>9.5f} {r.get('cos_min', float('nan')):>9.5f}"
        )
    env = report["environment"]
    lines.append(
        f"({env['threads']} threads of {env['cpu_count']} CPUs; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}; texts: {env['texts']}; batch "
        f"{report['config']['batch_size']} for texts/s)"
    )
    return "\n".join(lines) + "\n"


def _bench_encoder(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(EncoderBenchConfig, args)
    report = run_encoder_bench(cfg)
    sys.stdout.write(format_table(report))
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def bench_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``bench`` group's subparsers, creating the group unless another component did."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="measure speed (encoder, scoring)")
        return bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    # argparse keeps a parser's subparsers among its private actions; there is no public getter.
    for action in bench._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")


def register_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``junction bench encoder`` under the top-level subcommands."""
    p = bench_subparsers(subparsers).add_parser(
        "encoder", help="query-encoder latency and throughput: torch fp32/bf16 vs ONNX int8"
    )
    add_dataclass_args(p, EncoderBenchConfig)
    p.set_defaults(handler=_bench_encoder)


__all__ = ["EncoderBenchConfig", "register_bench", "run_encoder_bench", "texts_of_length"]
