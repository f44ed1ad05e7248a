"""A constant scorer used only when no LOCUS checkpoint is available.

Each model is represented by its mean evaluation score (z = [mean score]), and P(correct) of a
model is that constant for every query: the per-model-constant baseline
(``training.routers.baselines.ConstantRouter``). It keeps
the gateway usable (and honest: the router header says ``locus`` is not loaded) until a bundle
ships.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class ConstantEmbedder:
    """z = [mean score]; p_correct = that mean for every query. Router name: ``constant``."""

    dim = 1
    router_name = "constant"

    def embed(self, X: Any, y: Any) -> npt.NDArray[np.float32]:  # noqa: ARG002
        return np.asarray([float(np.mean(np.asarray(y, dtype=np.float32)))], dtype=np.float32)

    def predict(self, Z: Any, X: Any) -> npt.NDArray[np.float32]:
        z = np.asarray(Z, dtype=np.float32)[:, 0]
        return np.broadcast_to(z[None, :], (np.asarray(X).shape[0], z.shape[0])).astype(np.float32)
