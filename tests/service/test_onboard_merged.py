"""FlexMerge's gateway side end to end: a merged SmolLM2 variant exported as GGUF, served by the
CPU model server (llama-cpp-python), registered through the admin API from its measured
evaluations, routed to by ``/v1/route`` and by a ``junction/auto`` chat completion, and
answered by its own GGUF. The gateway runs with the real MiniLM encoder and LOCUS.

The variants' updates here are seeded random LoRA adapters (``make_tiny_run``), not fine-tuned
ones: the mechanics do not depend on how they were learned, and fine-tuning would not fit the
time budget of a test. ``junction admin onboard-merged`` runs the same code on a real run."""

from __future__ import annotations

import importlib.util

import pytest

from service.cli.onboard_merged import onboard
from tests.service.helpers import ADMIN_TOKEN, make_settings, run_gateway
from tests.training.research.test_flexmerge_export import make_tiny_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_merged_variants_are_onboarded_routed_and_served(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    import torch

    from training.research.flexmerge.variants import build_variants

    torch.set_num_threads(1)
    run = make_tiny_run(tmp_path / "run")
    folder = tmp_path / "variants"
    manifest = build_variants(run, folder, method="ties", export_sizes=[2], eval_per_task=2,
                              check_fidelity=False)  # fmt: skip
    two = [v for v in manifest["variants"] if v["size"] == 2.0]
    names = sorted(v["name"] for v in two)
    assert len(two) == 2 and all(len(v["evaluations"]) == 4 for v in two)
    # the merged variants answer differently from the base model somewhere (else serving the
    # base GGUF by mistake could not be told apart)
    base_replies = [r["reply"] for r in manifest["base"]["evaluations"]]
    assert any([r["reply"] for r in v["evaluations"]] != base_replies for v in two)

    settings = make_settings(tmp_path / "gw", min_evaluations=4, upstream_read_timeout_s=60)
    with run_gateway(settings, encoder=None, locus=None) as gw:
        report = onboard(folder, gateway=gw.url, admin_key=ADMIN_TOKEN, sizes=[2.0],
                         checks_per_task=1)  # fmt: skip
        for n in names:  # without `keep`, the variants leave the pool again
            assert gw.admin("GET", f"/admin/models/{n}").status_code == 404
    assert sorted(report["variants"]) == names
    for v in report["variants"].values():
        assert v["num_evaluations"] == 4 and v["routable"] is True
        # the model server's greedy replies are the merged model's (transformers, fp32)
        assert v["served"]["first_word_agreement"] >= 0.75, v["served"]
    assert report["listed_in_v1_models"]
    routing = report["routing"]
    assert len(routing["rows"]) == 2
    assert routing["routed_to_a_variant"] and routing["served_by_routed_variant"]
    assert all(r["reply"] is not None for r in routing["rows"])
