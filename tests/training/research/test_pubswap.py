"""pubswap: the rewards, the tasks, the swap rule, the server step, and the quick path (tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.research.jobs import run_job
from training.research.pubswap.config import PubSwapConfig
from training.research.pubswap.grpo import group_advantages, swap_group
from training.research.pubswap.rewards import exact_match, normalise
from training.research.pubswap.tasks import TASKS, task_data
from training.research.pubswap.train import PAD, aggregate_rlvr, drift, public_groups, schedule


def test_exact_match_rewards():
    got = exact_match(
        ["12", " 12.\nmore", "The answer is 12", "CAT", "cat", "Yes.", "no", "'58'"],
        answer=["12", "12", "12", "CAT", "CAT", "yes", "yes", "58"],
    )
    assert got == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert normalise('  "DOG"!  ') == "DOG"
    with pytest.raises(ValueError):
        exact_match(["1"], answer=["1", "2"])


def test_tasks_are_correct_heterogeneous_and_disjoint():
    data = task_data(seed=0, clients=4, per_client=10, public_per_task=2, test_per_task=5)
    assert [{it.task for it in p} for p in data.private] == [{t} for t in TASKS]
    test = {it.prompt for it in data.test}
    assert not test & {it.prompt for it in data.public}
    assert not test & {it.prompt for p in data.private for it in p}
    for it in data.test:
        if it.task == "add":
            a, b = (int(x) for x in it.prompt.split("Compute ")[1].split(".")[0].split(" + "))
            assert it.answer == str(a + b)
        if it.task == "parity":
            n = int(it.prompt.split()[1])
            assert it.answer == ("yes" if n % 2 == 0 else "no")


def test_swap_rule_replaces_only_own_incorrect_with_others_correct():
    pool = [(0, [1], 1.0), (0, [2], 0.0), (1, [3], 1.0), (1, [4], 0.0), (2, [5], 1.0)]
    own, own_r = [[1], [2]], [1.0, 0.0]
    rng = np.random.default_rng(0)
    grp, rew, swapped = swap_group(own, own_r, pool, client=0, mode="pubswap", rng=rng)
    assert grp[0] == [1] and not swapped[0]  # own correct kept
    assert grp[1] in ([3], [5]) and swapped[1] and rew == [1.0, 1.0]  # from others' correct
    grp, rew, swapped = swap_group(own, own_r, pool, client=0, mode="swapall", rng=rng)
    assert all(swapped) and all(g in ([1], [3], [5]) for g in grp) and rew == [1.0, 1.0]
    assert swap_group(own, own_r, pool, client=0, mode="none", rng=rng)[0] == own
    # nobody else correct: the own incorrect response stays
    lonely = [(0, [1], 1.0), (0, [2], 0.0), (1, [4], 0.0)]
    grp, rew, swapped = swap_group(own, own_r, lonely, client=0, mode="pubswap", rng=rng)
    assert grp == own and rew == own_r and not any(swapped)


def test_public_groups_use_the_pooled_success_rate_as_baseline():
    tokens = np.full((2, 1, 2, 3), PAD)
    tokens[0, 0, 0, :2], tokens[0, 0, 1, :1] = [7, 2], [8]
    tokens[1, 0, 0, :1], tokens[1, 0, 1, :2] = [9], [6, 2]
    reward = np.array([[[0.0, 0.0]], [[1.0, 0.0]]])  # only client 1's first response is correct
    ((grp, adv),) = public_groups(tokens, reward, client=0, mode="pubswap", seed=0)
    assert grp == [[9], [9]] and adv == [0.75, 0.75]  # rbar = 1/4
    ((grp, adv),) = public_groups(tokens, reward, client=1, mode="pubswap", seed=0)
    assert grp == [[9], [6, 2]] and adv == [0.75, -0.25]  # no other client is correct


def test_group_advantages_are_normalised():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert np.mean(adv) == pytest.approx(0.0) and adv[0] > 0 > adv[1]
    assert group_advantages([1.0, 1.0]) == [0.0, 0.0]


def test_server_step_averages_lora_holds_clients_and_pools_responses():
    a = {"w": np.array([1.0, 0.0], dtype=np.float32)}
    b = {"w": np.array([3.0, 2.0], dtype=np.float32)}
    glob = {"w": np.zeros(2, dtype=np.float32)}
    cfg = {"method": "pubswap"}
    new = aggregate_rlvr(cfg, {"kind": "private", "round": 0}, [(a, 1.0), (b, 1.0)], glob)
    np.testing.assert_allclose(new["w"], [2.0, 1.0])
    assert new["metric.drift"][0] == pytest.approx(np.sqrt(2))
    pub = {"pub.tokens": np.zeros((1, 2, 3), dtype=np.int64), "pub.reward": np.ones((1, 2))}
    new = aggregate_rlvr(
        cfg, {"kind": "sample", "round": 0}, [(a | pub, 1.0), (b | pub, 1.0)], glob
    )
    np.testing.assert_array_equal(new["w"], glob["w"])  # not averaged before the public step
    np.testing.assert_array_equal(new["held.w"], [a["w"], b["w"]])
    assert new["pool.tokens"].shape == (2, 1, 2, 3)
    local = aggregate_rlvr({"method": "local"}, {"kind": "private"}, [(a, 1.0), (b, 1.0)], glob)
    np.testing.assert_array_equal(local["held.w"], [a["w"], b["w"]])
    assert drift([a, a], [1.0, 1.0]) == 0.0


def test_schedule_adds_public_steps_only_for_the_swap_methods():
    cfg = PubSwapConfig(rounds=4, public_every=2)
    kinds = [r["kind"] for r in schedule(cfg, "pubswap")]
    assert kinds == ["private", "sample", "public", "private", "sample", "public"]
    assert [r["kind"] for r in schedule(cfg, "fedavg")] == ["private"] * 4


@pytest.mark.slow
def test_quick_path_on_a_tiny_model_writes_the_report(tmp_path):
    cfg = PubSwapConfig(
        model="tiny-random", clients=4, per_client=4, public_per_task=1, test_per_task=2,
        group=2, max_new_tokens=3, prompts_per_step=2, local_steps=1, rounds=2, public_every=1,
    )  # fmt: skip
    run_job("pubswap", cfg, tmp_path, seeds=1, quick=False, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["id"] for c in report["claims"]} == {
        "pubswap_best_global_accuracy", "pubswap_smallest_drift",
    }  # fmt: skip
    assert set(report["results"]["accuracy"]) == {"local", "fedavg", "pubswap", "swapall"}
    assert (tmp_path / "drift.png").stat().st_size > 0
