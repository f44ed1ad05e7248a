"""A new LOCUS checkpoint makes stored embeddings stale: re-embedded from stored evaluations at
start-up, or disabled (and enabled again when the old weights return) when none are stored."""

from __future__ import annotations

import asyncio

import numpy as np

from service.catalog import ModelSpec
from tests.service.helpers import MeanScoreLocus, make_settings, run_gateway


class ShiftedLocus(MeanScoreLocus):
    """Other weights: z = [mean score + 1]."""

    router_name = "locus"
    dim = 1

    def embed(self, X, y):
        return super().embed(X, y) + 1.0


def test_models_are_reembedded_or_disabled_when_the_weights_change(tmp_path, fake_a) -> None:
    settings = make_settings(tmp_path)
    with run_gateway(settings) as gw:
        assert (
            gw.register(
                "with-evals", fake_a.url, backend_model="backend-a", scores=(1, 0, 0, 0)
            ).status_code
            == 201
        )
        spec = ModelSpec("no-evals", "openai", fake_a.url, "backend-a", None, 1.0, 1.0)
        fut = asyncio.run_coroutine_threadsafe(
            gw.c.catalog.register_embedded(
                spec,
                embedding=np.array([0.5], np.float32),
                num_evaluations=100,
                mean_prompt_tokens=0,
                mean_completion_tokens=0,
            ),
            gw.server_loop(),
        )
        assert fut.result(10) is True
    with run_gateway(settings, locus=ShiftedLocus()) as gw:
        assert gw.admin("GET", "/admin/models/with-evals").json()["embedding"] == [1.25]
        no = gw.admin("GET", "/admin/models/no-evals").json()
        assert no["enabled"] is False
    with run_gateway(settings) as gw:
        assert gw.admin("GET", "/admin/models/with-evals").json()["embedding"] == [0.25]
        assert gw.admin("GET", "/admin/models/no-evals").json()["enabled"] is True
