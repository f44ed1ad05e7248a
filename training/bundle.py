"""The default artifact bundle the gateway starts with: LOCUS, the model pool, the routers.

Layout of ``training/artifacts/default/``::

    bundle.json   pool models (name, prices, size, LOCUS embedding, evaluation counts, mean token
                  counts, backend) and the file names below
    locus.pt      the LOCUS checkpoint that embedded the pool
    mlp.pt        the MLP router checkpoint (trained on the same pool)
    kmeans.pt     the K-means router checkpoint
    evidence.npz  the evaluations each pool model was embedded from (shared query embeddings,
                  float16, and a score per model), which LOCUS-KR's residual reads at serving

The pool is the MMLU-Pro seen models, each embedded by LOCUS from its training-split evaluations
and served by the replay backend (its real recorded answers), plus any live model whose measured
evaluations are committed beside the bundle (``live_models/*.jsonl``, e.g. SmolLM2 on CPU).

Usage::

    bundle = load_default_bundle()
    p = bundle.locus.predict(bundle.embeddings(), X)      # [B, M]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.locus import LocusEmbedder

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "artifacts" / "default"
BUNDLE_VERSION = 1


@dataclass
class PoolModel:
    name: str
    input_per_mtok: float
    output_per_mtok: float
    embedding: npt.NDArray[np.float32]
    num_evaluations: int
    mean_prompt_tokens: float
    mean_completion_tokens: float
    train_accuracy: float
    params_b: float = 0.0
    backend: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedding"] = [float(v) for v in self.embedding]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PoolModel:
        return cls(**{**d, "embedding": np.asarray(d["embedding"], dtype=np.float32)})


@dataclass
class Bundle:
    path: Path
    locus: LocusEmbedder
    models: list[PoolModel]
    routers: dict[str, Path]
    meta: dict[str, Any]
    evidence_file: str | None = None
    _evidence: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def evidence(self, name: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None:
        """The evaluations (query embeddings [n, D], scores [n]) a pool model was embedded from
        and that LOCUS-KR's residual uses; None when the bundle ships none for it."""
        if self.evidence_file is None:
            return None
        if self._evidence is None:
            self._evidence = read_evidence(self.path / self.evidence_file)
        return self._evidence.get(name)

    def embeddings(self) -> npt.NDArray[np.float32]:
        return np.stack([m.embedding for m in self.models]).astype(np.float32)


def load_bundle(path: str | Path = DEFAULT_BUNDLE) -> Bundle:
    folder = Path(path)
    spec_file = folder / "bundle.json"
    if not spec_file.exists():
        raise FileNotFoundError(
            f"{folder} holds no bundle.json: run `junction train default-bundle`"
        )
    spec = json.loads(spec_file.read_text())
    if spec.get("version") != BUNDLE_VERSION:
        raise ValueError(
            f"{spec_file}: bundle version {spec.get('version')}, expected {BUNDLE_VERSION}"
        )
    return Bundle(
        path=folder,
        locus=LocusEmbedder.from_checkpoint(folder / spec["locus"]),
        models=[PoolModel.from_json(m) for m in spec["models"]],
        routers={name: folder / f for name, f in spec.get("routers", {}).items()},
        meta=dict(spec.get("meta", {})),
        evidence_file=spec.get("evidence"),
    )


def write_evidence(
    path: Path, X: npt.NDArray[np.float32], names: list[str], scores: npt.NDArray[np.float32]
) -> Path:
    """Shared query embeddings X [n, D] (stored float16) and scores [M, n] (NaN = not evaluated)."""
    np.savez_compressed(
        path, X=X.astype(np.float16), names=np.asarray(names), scores=scores.astype(np.float16)
    )
    return path


def read_evidence(
    path: Path,
) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    with np.load(path, allow_pickle=False) as f:
        X = f["X"].astype(np.float32)
        names = [str(n) for n in f["names"]]
        scores = f["scores"].astype(np.float32)
    out = {}
    for i, name in enumerate(names):
        obs = ~np.isnan(scores[i])
        out[name] = (X[obs], scores[i, obs])
    return out


def load_default_bundle() -> Bundle:
    return load_bundle(DEFAULT_BUNDLE)


def write_bundle(
    folder: Path,
    *,
    locus_file: str,
    models: list[PoolModel],
    routers: dict[str, str],
    meta: dict[str, Any],
    evidence_file: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "version": BUNDLE_VERSION,
        "locus": locus_file,
        **({"evidence": evidence_file} if evidence_file else {}),
        "routers": routers,
        "meta": meta,
        "models": [m.to_json() for m in models],
    }
    out = folder / "bundle.json"
    out.write_text(json.dumps(spec, indent=1) + "\n")
    return out
