"""Federated RLVR rounds of the ``pubswap`` job: the client step, the server step, evaluation.

Global arrays: the LoRA parameters (averaged), plus ``held.<name>`` (every client's own LoRA,
stacked, for local-only and between PubSwap's two public messages), ``pool.tokens`` /
``pool.reward`` (every client's public responses and rewards, stacked) and ``metric.drift``.

Round kinds (``round_cfg["kind"]``):
- ``private``: each client takes ``local_steps`` GRPO steps on its private prompts from the
  global LoRA (local-only: from its own), replies with its LoRA; server: FedAvg (local-only: keep
  each client's) and the drift, mean_k ||theta_k - mean theta||.
- ``sample``: as ``private``, then the client samples ``group`` responses per public prompt with
  its local policy and sends them with their rewards; server: holds every client's LoRA, pools
  the responses, leaves the global LoRA as it was.
- ``public``: each client restarts from its held LoRA, takes one public step on its swapped
  groups (:func:`~.grpo.swap_group`), replies with its LoRA; server: FedAvg.

Usage::

    exp = rlvr_experiment("pubswap-s0", cfg, seed=0, method="pubswap")
    (res,) = InProcessBackend().run([exp])
    accuracy(exp.config, res.final)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.federated import Arrays, FedExperiment
from training.research.pubswap.config import PubSwapConfig
from training.research.pubswap.grpo import (
    decode,
    encode,
    greedy,
    group_advantages,
    policy_gradient_step,
    sample,
    swap_group,
)
from training.research.pubswap.rewards import exact_match
from training.research.pubswap.tasks import TASKS, TaskData, task_data

LOCAL_STEP = "training.research.pubswap.train:local_rlvr"
AGGREGATE = "training.research.pubswap.train:aggregate_rlvr"
PAD = -1


@lru_cache(maxsize=2)
def _policy(model: str, lora_rank: int, lora_layers: int, seed: int) -> tuple[Any, Any]:
    """The LoRA policy (one per process and setting; every use loads its adapters first)."""
    import torch

    from training.research.smollm import add_lora, load_smollm2, load_smollm2_tokenizer

    torch.set_num_threads(1)
    if model == "smollm2":
        lm, tok = load_smollm2()
    elif model == "tiny-random":  # a 2-layer random Llama with SmolLM2's tokenizer (tests)
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = load_smollm2_tokenizer()
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            )
        ).eval()  # fmt: skip
        lm.requires_grad_(False)
    else:
        raise ValueError(f"unknown model {model!r}")
    n = int(lm.config.num_hidden_layers)
    layers = list(range(max(0, n - lora_layers), n))
    return add_lora(lm, r=lora_rank, alpha=2 * lora_rank, layers=layers, seed=seed), tok


def policy(config: Mapping[str, Any], lora: Arrays | None = None) -> tuple[Any, Any]:
    from training.research.smollm import set_adapter_arrays

    model, tok = _policy(
        str(config["model"]), int(config["lora_rank"]), int(config["lora_layers"]),
        int(config["seed"]),
    )  # fmt: skip
    set_adapter_arrays(model, lora if lora is not None else _initial(config))
    return model, tok


@lru_cache(maxsize=4)
def _initial_cached(model: str, lora_rank: int, lora_layers: int, seed: int) -> Arrays:
    from training.research.smollm import adapter_arrays

    return adapter_arrays(_policy(model, lora_rank, lora_layers, seed)[0])


def _initial(config: Mapping[str, Any]) -> Arrays:
    return _initial_cached(
        str(config["model"]), int(config["lora_rank"]), int(config["lora_layers"]),
        int(config["seed"]),
    )  # fmt: skip


@lru_cache(maxsize=4)
def _data(
    seed: int, clients: int, per_client: int, public_per_task: int, test_per_task: int
) -> TaskData:
    return task_data(
        seed=seed, clients=clients, per_client=per_client, public_per_task=public_per_task,
        test_per_task=test_per_task,
    )  # fmt: skip


def data_of(config: Mapping[str, Any]) -> TaskData:
    return _data(
        int(config["seed"]), int(config["clients"]), int(config["per_client"]),
        int(config["public_per_task"]), int(config["test_per_task"]),
    )  # fmt: skip


def lora_keys(arrays: Mapping[str, np.ndarray]) -> list[str]:
    return [k for k in arrays if not k.startswith(("held.", "pool.", "metric."))]


def _own(arrays: Arrays, client: int, *, held: bool) -> Arrays:
    keys = lora_keys(arrays)
    if held:
        return {k: arrays[f"held.{k}"][client] for k in keys}
    return {k: arrays[k] for k in keys}


def _private_steps(
    config: Mapping[str, Any], model: Any, tok: Any, opt: Any, client: int, rnd: int
) -> None:
    items = data_of(config).private[client]
    rng = np.random.default_rng([int(config["seed"]), client, rnd, 1])
    g = int(config["group"])
    for step in range(int(config["local_steps"])):
        chosen = [items[i] for i in rng.choice(len(items), int(config["prompts_per_step"]), False)]
        ids = encode(tok, chosen, str(config["prompt_style"]))
        groups = sample(
            model, tok, ids, group=g, max_new_tokens=int(config["max_new_tokens"]),
            seed=int(rng.integers(2**31)),
        )  # fmt: skip
        prompts, comps, advs = [], [], []
        for p_ids, it, grp in zip(ids, chosen, groups, strict=True):
            rewards = exact_match(decode(tok, grp), answer=[it.answer] * g)
            prompts += [p_ids] * g
            comps += grp
            advs += group_advantages(rewards)
        policy_gradient_step(model, opt, prompts, comps, advs)
        del step


def _sample_public(
    config: Mapping[str, Any], model: Any, tok: Any, client: int, rnd: int
) -> dict[str, np.ndarray]:
    public = data_of(config).public
    g, t = int(config["group"]), int(config["max_new_tokens"]) + 1
    ids = encode(tok, public, str(config["prompt_style"]))
    seed = int(np.random.default_rng([int(config["seed"]), client, rnd, 2]).integers(2**31))
    groups = sample(
        model, tok, ids, group=g, max_new_tokens=int(config["max_new_tokens"]), seed=seed
    )
    tokens = np.full((len(public), g, t), PAD, dtype=np.int64)
    reward = np.zeros((len(public), g), dtype=np.float32)
    for p, (it, grp) in enumerate(zip(public, groups, strict=True)):
        reward[p] = exact_match(decode(tok, grp), answer=[it.answer] * g)
        for j, seq in enumerate(grp):
            tokens[p, j, : len(seq)] = seq
    return {"pub.tokens": tokens, "pub.reward": reward}


def public_groups(
    pool_tokens: np.ndarray, pool_reward: np.ndarray, *, client: int, mode: str, seed: int
) -> list[tuple[list[list[int]], list[float]]]:
    """Per public prompt: the client's swapped group and its advantages r_j - rbar_p (rbar_p:
    the pooled success rate on the prompt)."""
    rng = np.random.default_rng([seed, client, 3])
    out = []
    clients, prompts, group, _ = pool_tokens.shape
    for p in range(prompts):
        pool = [
            (c, [int(x) for x in pool_tokens[c, p, j] if x != PAD], float(pool_reward[c, p, j]))
            for c in range(clients)
            for j in range(group)
        ]
        own = [seq for c, seq, _ in pool if c == client]
        own_r = [r for c, _, r in pool if c == client]
        grp, rewards, _ = swap_group(own, own_r, pool, client=client, mode=mode, rng=rng)
        rbar = float(pool_reward[:, p].mean())
        out.append((grp, [r - rbar for r in rewards]))
    return out


def local_rlvr(
    config: Mapping[str, Any], clients: Sequence[int], arrays: Arrays, round_cfg: Mapping[str, Any]
) -> list[tuple[Arrays, float]]:
    import torch

    from training.research.smollm import adapter_arrays

    kind, rnd, method = str(round_cfg["kind"]), int(round_cfg["round"]), str(config["method"])
    out = []
    for c in clients:
        held = method == "local" or kind == "public"
        model, tok = policy(config, _own(arrays, c, held=held))
        opt = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=float(config["lr"])
        )
        reply: Arrays = {}
        if kind == "public":
            mode = "pubswap" if method == "pubswap" else "swapall"
            groups = public_groups(
                arrays["pool.tokens"], arrays["pool.reward"], client=c, mode=mode,
                seed=int(config["seed"]) * 1000 + rnd,
            )  # fmt: skip
            ids = encode(tok, data_of(config).public, str(config["prompt_style"]))
            prompts, comps, advs = [], [], []
            for p_ids, (grp, adv) in zip(ids, groups, strict=True):
                prompts += [p_ids] * len(grp)
                comps += grp
                advs += adv
            policy_gradient_step(model, opt, prompts, comps, advs)
        else:
            _private_steps(config, model, tok, opt, c, rnd)
            if kind == "sample":
                reply.update(_sample_public(config, model, tok, c, rnd))
        reply.update(adapter_arrays(model))
        out.append((reply, float(config["per_client"])))
    return out


def drift(lora: Sequence[Arrays], weights: Sequence[float]) -> float:
    """Mean over clients of ||theta_k - theta_bar|| (theta: all LoRA parameters, flattened;
    theta_bar: the weighted mean)."""
    vecs = np.stack([np.concatenate([a[k].ravel() for k in sorted(a)]) for a in lora])
    w = np.asarray(weights, dtype=float) / float(np.sum(weights))
    mean = (w[:, None] * vecs).sum(0)
    return float(np.linalg.norm(vecs - mean, axis=1).mean())


def aggregate_rlvr(
    config: Mapping[str, Any],
    round_cfg: Mapping[str, Any],
    replies: Sequence[tuple[Arrays, float]],
    arrays: Arrays,
) -> Arrays:
    from training.research.federated import weighted_mean

    kind, method = str(round_cfg["kind"]), str(config["method"])
    keys = lora_keys(arrays)
    lora = [{k: a[k] for k in keys} for a, _ in replies]
    weights = [w for _, w in replies]
    new: Arrays = {}
    if kind == "public":
        new.update(weighted_mean(list(zip(lora, weights, strict=True))))
        new["metric.drift"] = np.array([np.nan])
        return new
    d = np.array([drift(lora, weights)])
    if method == "local":
        new.update({k: arrays[k] for k in keys})
        new.update({f"held.{k}": np.stack([a[k] for a in lora]) for k in keys})
    elif kind == "sample":
        new.update({k: arrays[k] for k in keys})
        new.update({f"held.{k}": np.stack([a[k] for a in lora]) for k in keys})
        new["pool.tokens"] = np.stack([a["pub.tokens"] for a, _ in replies])
        new["pool.reward"] = np.stack([a["pub.reward"] for a, _ in replies])
    else:
        new.update(weighted_mean(list(zip(lora, weights, strict=True))))
    new["metric.drift"] = d
    return new


def schedule(cfg: PubSwapConfig, method: str) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for r in range(cfg.rounds):
        if method in ("pubswap", "swapall") and (r + 1) % cfg.public_every == 0:
            rounds += [{"kind": "sample", "round": r}, {"kind": "public", "round": r}]
        else:
            rounds.append({"kind": "private", "round": r})
    return rounds


def experiment_config(cfg: PubSwapConfig, *, seed: int, method: str) -> dict[str, Any]:
    d = {k: v for k, v in asdict(cfg).items() if k not in ("methods",)}
    return {**d, "seed": seed, "method": method}


def rlvr_experiment(name: str, cfg: PubSwapConfig, *, seed: int, method: str) -> FedExperiment:
    config = experiment_config(cfg, seed=seed, method=method)
    init = dict(_initial(config))
    if method == "local":
        init.update({f"held.{k}": np.stack([v] * cfg.clients) for k, v in _initial(config).items()})
    return FedExperiment(
        name, LOCAL_STEP, config, cfg.clients, init, schedule(cfg, method), aggregate=AGGREGATE
    )


def accuracy(config: Mapping[str, Any], arrays: Arrays) -> dict[str, float]:
    """Greedy exact-match accuracy on the test set, per task type and ``global`` (their mean);
    local-only: the mean over clients of each client's own model's figures."""
    keys = lora_keys(arrays)
    if str(config["method"]) == "local":
        per = [
            _accuracy_of(config, {k: arrays[f"held.{k}"][c] for k in keys})
            for c in range(int(config["clients"]))
        ]
        return {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    return _accuracy_of(config, {k: arrays[k] for k in keys})


def _accuracy_of(config: Mapping[str, Any], lora: Arrays) -> dict[str, float]:
    model, tok = policy(config, lora)
    test = data_of(config).test
    got = greedy(
        model, tok, encode(tok, test, str(config["prompt_style"])),
        max_new_tokens=int(config["max_new_tokens"]),
    )  # fmt: skip
    scores = exact_match(got, answer=[it.answer for it in test])
    out = {
        t: float(np.mean([s for s, it in zip(scores, test, strict=True) if it.task == t]))
        for t in TASKS
    }
    out["global"] = float(np.mean(scores))
    return out
