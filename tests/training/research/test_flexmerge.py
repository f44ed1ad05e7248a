"""flexmerge: the merge operators by hand, the greedy step and its size accounting, the quick path."""

from __future__ import annotations

import json

import pytest
import torch

from training.research.flexmerge.config import FlexMergeConfig
from training.research.flexmerge.merge import (
    FlexMerge,
    merge_schedule,
    merge_vectors,
    size_x,
    ties_merge,
    trim_top_k,
)
from training.research.jobs import run_job


def t(*x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def test_ties_trim_elect_merge_by_hand():
    a, b, c = t(3, -1, 0.5, 2), t(-2, -4, 1, 0.1), t(1, 0.9, -3, 0.2)
    # top 50 %: a keeps 3, 2; b keeps -2, -4; c keeps 1, -3
    assert torch.equal(trim_top_k(a, 0.5), t(3, 0, 0, 2))
    # elected signs of the sums (2, -4, -3, 2): +, -, -, +; disjoint means of agreeing entries:
    # coord 0: (3 + 1) / 2 = 2; coord 1: (-4) / 1; coord 2: (-3) / 1; coord 3: 2 / 1
    assert torch.allclose(ties_merge([a, b, c], k=0.5, lam=1.0), t(2, -4, -3, 2))
    assert torch.allclose(ties_merge([a, b, c], k=0.5, lam=0.5), t(1, -2, -1.5, 1))
    assert torch.equal(
        trim_top_k(t(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.3), t(0, 0, 0, 0, 0, 0, 0, 8, 9, 10)
    )


def test_avg_and_task_arithmetic_and_singletons():
    a, b = t(1, 2), t(3, -2)
    assert torch.equal(merge_vectors([a, b], method="avg"), t(2, 0))
    assert torch.allclose(merge_vectors([a, b], method="ta", lam=0.5), t(2, 0))
    for m in ("avg", "ta", "ties"):  # a group of one keeps its own vector
        assert torch.equal(merge_vectors([a], method=m, lam=0.3, k=0.1), a)
    with pytest.raises(ValueError):
        merge_vectors([a, b], method="slerp")


def test_size_accounting_and_greedy_order():
    # blocks of 2 and 6 parameters, 3 tasks; in block 1 tasks 0 and 2 point the same way
    tau = [
        [t(1, 0), t(0, 1), t(-1, 1)],
        [t(1, 1, 0, 0, 0, 0), t(0, 0, 1, 0, 0, 0), t(2, 2, 0, 0, 0, 0.1)],
    ]
    fm = FlexMerge(tau, method="avg")
    assert fm.size() == pytest.approx(3.0) and fm.stored_params() == 24
    assert fm.steps_left() == 4
    block, members, cos = fm.step()
    assert (block, members) == (1, (0, 2)) and cos > 0.99
    assert fm.size() == pytest.approx((3 * 2 + 2 * 6) / 8) and fm.stored_params() == 18
    assert fm.size() == pytest.approx(size_x([3, 2], [2, 6]))
    assert torch.allclose(fm.task_vector(2)[1], t(1.5, 1.5, 0, 0, 0, 0.05))
    assert torch.equal(fm.task_vector(1)[1], tau[1][1])
    assert len(fm.variants()) == 3  # block 0 still differs for every task
    while fm.steps_left():
        fm.step()
    assert fm.size() == pytest.approx(1.0) and fm.stored_params() == 8
    assert fm.variants() == [(0, 1, 2)] and len(fm.history) == 4
    with pytest.raises(RuntimeError):
        fm.step()
    assert merge_schedule(4, 3) == [0, 2, 4]


def test_quick_path_digits(tmp_path):
    cfg = FlexMergeConfig(llm=False, digits_width=32, digits_res_blocks=2,
                          digits_pretrain_epochs=3, digits_finetune_epochs=2, digits_points=4)  # fmt: skip
    report = run_job("flexmerge", cfg, tmp_path, seeds=1, quick=False, progress=False)
    ids = {c["id"] for c in report["claims"]}
    assert ids == {"accuracy_rises_with_size_digits", "first_step_gains_most_digits"}
    on_disk = json.loads((tmp_path / "report.json").read_text())
    run = on_disk["results"]["digits"][0]
    for m in ("avg", "ta", "ties"):
        sizes = run[m]["size"]
        assert sizes[0] == pytest.approx(8.0) and sizes[-1] == pytest.approx(1.0)
        assert run[m]["variants"][0] == 8 and run[m]["variants"][-1] == 1
        blocks = sum(run["block_sizes"])
        for s, stored in zip(sizes, run[m]["stored_params"], strict=True):
            assert s == pytest.approx(stored / blocks)
        assert run[m]["normalised"][0] == pytest.approx(1.0)  # nothing merged: the fine-tunes
    assert (tmp_path / "digits_size.png").exists() and (tmp_path / "summary.md").exists()
