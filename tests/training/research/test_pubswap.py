"""pubswap: the rewards, the tasks, the swap rule, the server step, and the quick path (tiny)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from training.research.jobs import run_job
from training.research.pubswap.config import PubSwapConfig
from training.research.pubswap.grpo import group_advantages, swap_group
from training.research.pubswap.rewards import answer_of, exact_match, first_line, is_correct
from training.research.pubswap.tasks import (
    EXAMPLES,
    MORE_WORDS,
    TASKS,
    WORDS,
    TaskData,
    make_items,
    render,
    task_data,
)
from training.research.pubswap.train import PAD, aggregate_rlvr, drift, public_groups, schedule


def test_exact_match_rewards_grade_the_first_word_only():
    completions = [
        " 12", " 12.\nmore", " 12, which is", "The answer is 12", " 1", " 120", "12+3", "\n\n12",
        " CAT", " cat", " CATS.", " Yes.", " no", " '58'", " **58**", "", " 58 or 67",
    ]  # fmt: skip
    answers = [
        "12", "12", "12", "12", "12", "12", "12", "12",
        "CAT", "CAT", "CAT", "yes", "yes", "58", "58", "58", "58",
    ]  # fmt: skip
    want = [1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    assert exact_match(completions, answer=answers) == [float(w) for w in want]
    assert answer_of('  "DOG"!  rest') == "DOG"
    # the first version's rule: the whole first line must be the answer
    assert first_line(" 12, which is") == "12, which is"
    assert not is_correct(" 12, which is", "12", rule="first_line")
    assert is_correct(" 12.\nmore", "12", rule="first_line")
    with pytest.raises(ValueError):
        exact_match(["1"], answer=["1", "2"])
    with pytest.raises(ValueError):
        is_correct("1", "1", rule="lenient")


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
    # the one-shot examples are never drawn into a set
    examples = {ex.prompt for ex in EXAMPLES.values()}
    assert not examples & {it.prompt for it in data.test + data.public}
    assert not examples & {it.prompt for p in data.private for it in p}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_setting_generates_its_data_for_every_task(seed):
    """The default PubSwapConfig once failed here: 'upper' had 36 words for 16 + 2 + 32 prompts."""
    cfg = PubSwapConfig()

    def data_of(seed: int) -> TaskData:
        return task_data(
            seed=seed, clients=cfg.clients, per_client=cfg.per_client,
            public_per_task=cfg.public_per_task, test_per_task=cfg.test_per_task,
        )  # fmt: skip

    data = data_of(seed)
    for t in TASKS:
        assert sum(it.task == t for it in data.test) == cfg.test_per_task
        assert sum(it.task == t for it in data.public) == cfg.public_per_task
    assert len(data.private) == cfg.clients
    for c, p in enumerate(data.private):
        assert len(p) == cfg.per_client and {it.task for it in p} == {TASKS[c % len(TASKS)]}
    splits = [data.test, data.public, *data.private]
    prompts = [it.prompt for split in splits for it in split]
    assert len(prompts) == len(set(prompts))  # distinct within and disjoint across the splits
    assert not {ex.prompt for ex in EXAMPLES.values()} & set(prompts)
    for it in (it for split in splits for it in split):
        if it.task == "upper":
            word = it.prompt.split("Write the word ")[1].split(" ")[0]
            assert word in WORDS + MORE_WORDS and it.answer == word.upper()
        if it.task == "parity":
            n = int(it.prompt.split()[1])
            assert 1 <= n < 100 and it.answer == ("yes" if n % 2 == 0 else "no")
    again = data_of(seed)
    assert [it.prompt for split in [again.test, again.public, *again.private] for it in split] == (
        prompts
    )
    other = data_of(seed + 3)
    assert [it.prompt for it in other.test] != [it.prompt for it in data.test]


def _digest(seed: int, *, per_client: int, public_per_task: int, test_per_task: int) -> str:
    d = task_data(
        seed=seed, clients=4, per_client=per_client, public_per_task=public_per_task,
        test_per_task=test_per_task,
    )  # fmt: skip
    items = d.test + d.public + [it for p in d.private for it in p]
    text = "\n".join(f"{it.prompt}|{it.answer}|{it.prefill}" for it in items)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_committed_runs_prompts_are_unchanged():
    """The prompts of results/pubswap (3 seeds) and results/pubswap-quick, pinned as generated
    before the word/number extensions existed: the extensions must not move them."""
    pinned = {0: "9ab93db3365d8ae4", 1: "a2c881c34d36dab2", 2: "3d1975094cecc7e0"}
    for seed, want in pinned.items():
        assert _digest(seed, per_client=8, public_per_task=1, test_per_task=12) == want
    assert _digest(0, per_client=8, public_per_task=1, test_per_task=6) == "606daf1509129b90"


def test_small_pools_extend_only_once_used_up():
    upper = make_items("upper", n=len(WORDS) + 5, rng=np.random.default_rng(0))
    words = [it.answer.lower() for it in upper]
    assert set(words[: len(WORDS)]) == set(WORDS)  # the whole pool first, then the extension
    assert set(words[len(WORDS) :]) <= set(MORE_WORDS)
    parity = make_items("parity", n=60, rng=np.random.default_rng(0))
    numbers = [int(it.prompt.split()[1]) for it in parity]
    assert sorted(numbers[:58]) == [n for n in range(1, 60) if n != 9]  # 9: the one-shot example
    assert all(60 <= n < 100 for n in numbers[58:])
    # a draw the pool alone satisfies never touches the extension
    few = make_items("upper", n=10, rng=np.random.default_rng(1))
    assert {it.answer.lower() for it in few} <= set(WORDS)
    with pytest.raises(ValueError, match="fewer than"):
        make_items("upper", n=len(WORDS) + len(MORE_WORDS) + 1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="fewer than"):
        make_items("add", n=19 * 19, rng=np.random.default_rng(0))  # 361 minus the example


def test_oneshot_prompt_shows_a_solved_example_and_opens_the_reply():
    data = task_data(seed=0, clients=4, per_client=2, public_per_task=1, test_per_task=1)
    for it in data.test:
        ex = EXAMPLES[it.task]
        text = render(it, "oneshot")
        # example question, its solved reply, the question, then the reply's opening
        assert text.startswith(f"<|im_start|>user\n{ex.prompt}<|im_end|>\n")
        assert f"<|im_start|>assistant\n{ex.prefill} {ex.answer}<|im_end|>\n" in text
        assert text.endswith(
            f"<|im_start|>user\n{it.prompt}<|im_end|>\n<|im_start|>assistant\n{it.prefill}"
        )
        assert it.answer not in it.prefill.split()  # the opening does not give the answer away
        assert (
            render(it, "plain")
            == f"<|im_start|>user\n{it.prompt}<|im_end|>\n<|im_start|>assistant\n"
        )
        # the example's reply graded as a completion of its opening is correct
        assert is_correct(f" {ex.answer}", ex.answer)
    with pytest.raises(ValueError):
        render(data.test[0], "fewshot")


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


def _tiny_policy():
    import torch

    from training.research.pubswap.train import _policy
    from training.research.smollm import adapter_arrays, set_adapter_arrays

    model, tok = _policy("tiny-random", 2, 1, 0)
    rng = np.random.default_rng(1)  # non-zero LoRA B, so the adapters change the prompt's K/V
    set_adapter_arrays(
        model,
        {
            k: rng.normal(0, 0.5, v.shape).astype(np.float32)
            for k, v in adapter_arrays(model).items()
        },
    )
    torch.manual_seed(0)
    return model, tok


def test_shared_prompt_logprobs_equal_full_sequence_forward_passes():
    import torch

    from training.research.pubswap.grpo import completion_logprobs

    model, _ = _tiny_policy()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [5, 6, 7, 8, 9], [11, 12]]  # repeats, different lengths
    comps = [[20, 21, 22], [30], [23, 24], [31, 32, 33, 34]]
    logp, mask = completion_logprobs(model, prompts, comps)
    assert mask.sum(1).tolist() == [3, 1, 2, 4]
    for i, (p, c) in enumerate(zip(prompts, comps, strict=True)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c)[:, None])[:, 0]
        torch.testing.assert_close(logp[i, : len(c)].detach(), want, atol=1e-4, rtol=1e-4)
    # gradients reach the LoRA parameters through the shared prompt state
    (-logp[mask].sum()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    model.zero_grad()


def test_decoding_matches_transformers_greedy_and_is_seeded():
    import torch

    from training.research.pubswap.grpo import _decode_loop, sample

    model, tok = _tiny_policy()
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    ours = _decode_loop(
        model, prompts, [0, 1], max_new_tokens=4, eos=tok.eos_token_id, pad=tok.pad_token_id,
        temperature=0.0, generator=None,
    )  # fmt: skip
    for p, got in zip(prompts, ours, strict=True):
        with torch.no_grad():
            ref = model.generate(
                input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=4,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )[0, len(p) :].tolist()  # fmt: skip
        assert got == ref
    a = sample(model, tok, prompts, group=3, max_new_tokens=4, seed=7)
    b = sample(model, tok, prompts, group=3, max_new_tokens=4, seed=7)
    assert a == b and [len(g) for g in a] == [3, 3]
    assert sample(model, tok, prompts, group=3, max_new_tokens=4, seed=8) != a
    cold = sample(model, tok, prompts, group=2, max_new_tokens=4, seed=7, temperature=1e-6)
    assert cold == [[ours[0]] * 2, [ours[1]] * 2]


@pytest.mark.slow
def test_flower_backend_repeats_the_pubswap_run_exactly(tmp_path):
    """On the Flower backend the first seed's PubSwap run is repeated in Flower's Simulation
    Engine (each ClientApp calls ``local_rlvr``, the ServerApp ``aggregate_rlvr``, the public
    swap included) and gives the in-process run's LoRA arrays."""
    from federation.research_app import FlowerBackend

    cfg = PubSwapConfig(
        model="tiny-random", clients=4, per_client=4, public_per_task=1, test_per_task=2,
        group=2, max_new_tokens=3, prompts_per_step=2, local_steps=1, rounds=2, public_every=1,
        methods="fedavg,pubswap",
    )  # fmt: skip
    run_job("pubswap", cfg, tmp_path, seeds=1, quick=False, progress=False,
            backend=FlowerBackend())  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    flower = report["results"]["flower"]
    assert flower["backend"] == "flower" and flower["runs"] == ["pubswap-s0"]
    assert flower["max_abs_difference"] < 1e-6
    assert "repeated on Flower" in " ".join(report["notes"])


def test_a_single_method_makes_no_claim(tmp_path):
    cfg = PubSwapConfig(
        model="tiny-random", clients=4, per_client=4, public_per_task=1, test_per_task=2,
        group=2, max_new_tokens=3, prompts_per_step=2, local_steps=1, rounds=1, public_every=1,
        methods="pubswap",
    )  # fmt: skip
    run_job("pubswap", cfg, tmp_path, seeds=1, quick=False, progress=False)
    assert json.loads((tmp_path / "report.json").read_text())["claims"] == []
