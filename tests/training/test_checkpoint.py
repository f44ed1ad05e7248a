"""``training.checkpoint``: the one checkpoint format, and the older files it still reads."""

from __future__ import annotations

import io

import pytest
import torch

from training.bundle import DEFAULT_BUNDLE
from training.checkpoint import load_checkpoint, save_checkpoint
from training.routers import KMeansRouter, MLPRouter, load_router


def test_round_trip_from_a_file_and_from_bytes(tmp_path) -> None:
    sd = {"w": torch.arange(3.0)}
    path = save_checkpoint(
        tmp_path / "a" / "c.pt", kind="k", config={"n": 1}, state_dict=sd, step=4, extra=[1]
    )
    for src in (path, path.read_bytes()):
        ckpt = load_checkpoint(src, kind="k")
        assert set(ckpt) == {"kind", "config", "state_dict", "step", "metrics", "extra"}
        assert (ckpt["config"], ckpt["step"], ckpt["metrics"], ckpt["extra"]) == (
            {"n": 1},
            4,
            {},
            [1],
        )
        assert torch.equal(ckpt["state_dict"]["w"], sd["w"])


def test_refusals(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", kind="mf", config={}, state_dict={})
    with pytest.raises(ValueError, match="is not a LOCUS checkpoint"):
        load_checkpoint(path, kind="locus", what="a LOCUS checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(b"not a checkpoint")
    buf = io.BytesIO()
    torch.save([1, 2], buf)
    with pytest.raises(ValueError, match="not a dict"):
        load_checkpoint(buf.getvalue())


def test_old_router_files_load_in_the_current_format(tmp_path) -> None:
    old = tmp_path / "old.pt"
    torch.save({"kind": "mlp", "config": {}, "state": {"models": ["a"]}, "metrics": {}}, old)
    ckpt = load_checkpoint(old)
    assert ckpt["state_dict"] == {"models": ["a"]} and "state" not in ckpt and ckpt["step"] == 0


def test_the_shipped_bundle_s_routers_still_load() -> None:
    """Committed in the routers' older format ("state"), read unchanged."""
    for name, cls in (("mlp.pt", MLPRouter), ("kmeans.pt", KMeansRouter)):
        path = DEFAULT_BUNDLE / name
        assert "state" in torch.load(path, weights_only=True)  # still the old file
        router = load_router(path)
        assert isinstance(router, cls) and router.models
