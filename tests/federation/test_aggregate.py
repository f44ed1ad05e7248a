"""Per-head sample-weighted aggregation and the robust checks, by hand-checkable numbers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from federation.aggregate import Update, aggregate, group_of


def glob() -> dict[str, np.ndarray]:
    return {
        "trunk.0.weight": np.zeros((2, 3), dtype=np.float32),
        "head_w.0": np.zeros((2, 3), dtype=np.float32),
        "head_w.1": np.ones((2, 3), dtype=np.float32),
        "head_w.2": np.full((2, 3), 5.0, dtype=np.float32),
    }


def upd(client: str, value: float, rows: dict[str, float], keys: list[str]) -> Update:
    return Update(
        client, {k: np.full((2, 3), value, dtype=np.float32) for k in keys}, group_rows=rows
    )


def test_group_names() -> None:
    assert group_of("head_w.12") == "head:12" and group_of("head_b.3") == "head:3"
    assert group_of("trunk.4.bias") == "trunk"


def test_each_head_is_averaged_only_over_the_clients_that_trained_it() -> None:
    a = upd("a", 2.0, {"trunk": 30, "head:0": 30}, ["trunk.0.weight", "head_w.0"])
    b = upd(
        "b",
        6.0,
        {"trunk": 10, "head:0": 5, "head:1": 5},
        ["trunk.0.weight", "head_w.0", "head_w.1"],
    )
    new, rep = aggregate(glob(), [a, b], mode="none")
    assert rep.accepted == ["a", "b"] and not rep.rejected
    np.testing.assert_allclose(new["trunk.0.weight"], (30 * 2 + 10 * 6) / 40)  # rows-weighted
    np.testing.assert_allclose(new["head_w.0"], (30 * 2 + 5 * 6) / 35)  # head rows, not trunk
    np.testing.assert_allclose(new["head_w.1"], 6.0)  # only b trained model 1: b's head
    np.testing.assert_allclose(new["head_w.2"], 5.0)  # nobody trained model 2: unchanged


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"head_w.0": np.full((3, 2), 1.0)}, "shape"),
        ({"head_w.0": np.full((2, 3), np.nan)}, "non-finite"),
        ({"head_w.9": np.zeros((2, 3))}, "unknown"),
        ({"head_w.1": np.zeros((2, 3))}, "row count"),  # sends head 1 without rows for it
    ],
)
def test_malformed_updates_are_rejected_with_a_logged_reason(bad, reason, caplog) -> None:
    good = upd("good", 2.0, {"trunk": 10, "head:0": 10}, ["trunk.0.weight", "head_w.0"])
    evil = Update("evil", bad, group_rows={"trunk": 10, "head:0": 10})
    with caplog.at_level(logging.WARNING, logger="federation.aggregate"):
        new, rep = aggregate(glob(), [good, evil], mode="none")
    assert rep.accepted == ["good"] and reason in rep.rejected["evil"]
    assert any("evil" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(new["head_w.0"], 2.0)  # as if only the good client had replied


def test_clipping_bounds_a_scaled_update_and_trimmed_mean_drops_it() -> None:
    keys = ["trunk.0.weight"]
    honest = [upd(c, v, {"trunk": 10}, keys) for c, v in [("a", 1.0), ("b", 1.2), ("c", 0.8)]]
    attacker = upd("x", 100.0, {"trunk": 10}, keys)  # a x100 update
    plain, _ = aggregate(glob(), [*honest, attacker], mode="none")
    clipped, rep = aggregate(glob(), [*honest, attacker], mode="clip", clip_factor=2.0)
    trimmed, _ = aggregate(glob(), [*honest, attacker], mode="trimmed", trim_frac=0.25)
    assert plain["trunk.0.weight"].mean() > 20  # the attacker dominates a plain mean
    assert set(rep.clipped) == {"x"} and rep.clipped["x"] < 0.05
    # clipped to 2x the median norm: its delta counts like an update of about twice the honest size
    assert 1.0 < clipped["trunk.0.weight"].mean() < 1.6
    np.testing.assert_allclose(trimmed["trunk.0.weight"], (1.0 + 1.2) / 2, rtol=1e-6)
