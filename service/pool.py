"""The shipped default pool: the bundle's data-set models (replay backends) and live models.

``seed_default_pool`` registers every bundle model that the registry does not hold yet, with
the embedding LOCUS computed from its training-split evaluations. Live models (SmolLM2 on CPU)
are onboarded by ``onboard_live_model`` from evaluations measured on them and committed as
JSONL (``service/live_models/<name>.jsonl``), once their server is up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from service.catalog import ModelSpec
from service.errors import Conflict
from service.evaluations.rows import EvalInput, to_input

if TYPE_CHECKING:
    from service.catalog import Catalog

log = logging.getLogger(__name__)
LIVE_MODELS = Path(__file__).resolve().parent / "live_models"


async def seed_default_pool(catalog: Catalog, bundle_path: Path | str | None = None) -> int:
    from training.bundle import DEFAULT_BUNDLE

    folder = Path(bundle_path or DEFAULT_BUNDLE)
    if not (folder / "bundle.json").exists():
        log.warning("no bundle at %s: the registry starts with what the database holds", folder)
        return 0
    from training.bundle import load_bundle

    bundle = load_bundle(folder)
    added = 0
    for m in bundle.models:
        kind = str(m.backend.get("kind", "replay"))
        spec = ModelSpec(
            name=m.name,
            backend_kind=kind,
            backend_url=m.backend.get("url"),
            backend_model=str(m.backend.get("model", m.name)),
            backend_api_key=None,
            input_per_mtok=m.input_per_mtok,
            output_per_mtok=m.output_per_mtok,
            meta={"dataset": m.backend.get("dataset"), "source": "bundle"},
        )
        added += await catalog.register_embedded(
            spec,
            embedding=m.embedding,
            num_evaluations=m.num_evaluations,
            mean_prompt_tokens=m.mean_prompt_tokens,
            mean_completion_tokens=m.mean_completion_tokens,
            evidence=bundle.evidence(m.name),
        )
    log.info("default pool: %d bundle models added (%d in the bundle)", added, len(bundle.models))
    return added


def read_live_evaluations(path: Path) -> list[EvalInput]:
    return [to_input(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


async def onboard_live_model(
    catalog: Catalog,
    *,
    name: str,
    url: str,
    backend_model: str,
    input_per_mtok: float = 0.0,
    output_per_mtok: float = 0.0,
    evaluations: Path | None = None,
) -> None:
    """Register a live model from its committed evaluations, or point it at ``url`` if present."""
    path = evaluations or LIVE_MODELS / f"{name}.jsonl"
    spec = ModelSpec(
        name=name,
        backend_kind="openai",
        backend_url=url,
        backend_model=backend_model,
        backend_api_key=None,
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        meta={"source": "live", "evaluations_file": path.name},
    )
    try:
        await catalog.register(spec, read_live_evaluations(path))
        log.info("onboarded %s at %s", name, url)
    except Conflict:
        await catalog.update(
            name, {"backend_url": url, "backend_model": backend_model, "enabled": True}
        )
        log.info("%s already registered: backend now %s", name, url)
