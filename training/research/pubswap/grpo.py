"""A small GRPO step for LoRA on SmolLM2, and PubSwap's swap rule.

Why not TRL's ``GRPOTrainer``: PubSwap's public step trains on a group in which some responses
are not the client's own samples (they come from other clients through the server), and
GRPOTrainer generates and scores its own completions with no hook to substitute them; building a
trainer per client per round is also seconds of overhead on this 2-core CPU. The step here is
GRPO as TRL computes it with its defaults (``num_iterations=1``, ``beta=0``): one gradient step
per generated batch, so the clipped ratio is 1 and its gradient is the policy gradient
``-A_j grad log pi(y_j)``, token-level normalised over the batch (TRL's ``dapo`` loss). Group
advantages on private data are ``(r_j - mean_g r) / (std_g r + 1e-4)`` (TRL's ``scale_rewards``).

Public step (our formalisation of the abstract; no public code): each client samples G responses
per public prompt with its current local policy and sends them with their rewards. The server
pools them. Client i then trains on its group where, for PubSwap, each of its incorrect
responses is replaced by a correct one drawn from the other clients' responses to that prompt
(kept when there is none); for swap-all every response is drawn from the pooled correct ones (SFT
on globally correct responses, the notes' reference point); with no swap it is public GRPO. The
advantage of response j is ``r_j - rbar_p``, rbar_p the pooled (global) success rate on the
prompt: the exchanged response-level signal serves as the baseline, which (unlike a group-mean
baseline) does not vanish on a group made all-correct by the swap. Swapped-in responses are used
with the local policy's log-probabilities, no importance weight (the behaviour policy is another
client's; stop-gradient on it, as the notes allow).

Usage::

    groups = sample(model, tok, prompts, group=4, max_new_tokens=5, seed=0)
    loss = policy_gradient_step(model, opt, prompt_ids, completions, advantages)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.research.smollm import chat_prompt


def encode(tok: Any, texts: Sequence[str]) -> list[list[int]]:
    return [list(tok(chat_prompt(t), add_special_tokens=False)["input_ids"]) for t in texts]


def _left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s) :] = torch.tensor(list(s))
        mask[i, n - len(s) :] = 1
    return ids, mask


def _cut(ids: Sequence[int], eos: int) -> list[int]:
    """A completion up to and including its first EOS."""
    out = []
    for t in ids:
        out.append(int(t))
        if t == eos:
            break
    return out


def sample(
    model: Any,
    tok: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    group: int,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
) -> list[list[list[int]]]:
    """``group`` sampled completions (token ids, through the first EOS) per prompt."""
    import torch

    ids, mask = _left_pad(prompt_ids, tok.pad_token_id)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
            top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=group,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
    new = out[:, ids.shape[1] :].tolist()  # (P * G, T), prompts' groups contiguous
    return [
        [_cut(new[p * group + g], tok.eos_token_id) for g in range(group)]
        for p in range(len(prompt_ids))
    ]


def greedy(
    model: Any, tok: Any, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int
) -> list[str]:
    import torch

    ids, mask = _left_pad(prompt_ids, tok.pad_token_id)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
    return [str(tok.decode(r, skip_special_tokens=True)) for r in out[:, ids.shape[1] :].tolist()]


def decode(tok: Any, completions: Sequence[Sequence[int]]) -> list[str]:
    return [str(tok.decode(list(c), skip_special_tokens=True)) for c in completions]


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """GRPO's group-normalised advantages, (r - mean) / (std + 1e-4)."""
    r = np.asarray(rewards, dtype=float)
    return ((r - r.mean()) / (r.std(ddof=1 if len(r) > 1 else 0) + 1e-4)).tolist()


def policy_gradient_step(
    model: Any,
    opt: Any,
    prompt_ids: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    advantages: Sequence[float],
    *,
    pad: int,
) -> float:
    """One step on -sum_j A_j sum_t log pi(y_jt | x_j, y_j<t) / (tokens in the batch).

    Sequences with zero advantage or no tokens are left out; returns the loss (0.0 when no
    sequence carries signal, and then no step is taken)."""
    import torch

    keep = [i for i, (c, a) in enumerate(zip(completions, advantages, strict=True)) if c and a]
    if not keep:
        return 0.0
    seqs = [list(prompt_ids[i]) + list(completions[i]) for i in keep]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)  # right padding: causal, no mask
    target = torch.zeros((len(seqs), n), dtype=torch.bool)
    for row, (i, s) in enumerate(zip(keep, seqs, strict=True)):
        ids[row, : len(s)] = torch.tensor(s)
        target[row, len(prompt_ids[i]) : len(s)] = True
    logits = model(input_ids=ids).logits[:, :-1]  # (B, n - 1, V): predicts tokens 1..n-1
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    mask = target[:, 1:]
    adv = torch.tensor([float(advantages[i]) for i in keep])[:, None]
    loss = -(adv * logp * mask).sum() / mask.sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def swap_group(
    own: Sequence[Sequence[int]],
    own_rewards: Sequence[float],
    pool: Sequence[tuple[int, Sequence[int], float]],
    *,
    client: int,
    mode: str,
    rng: np.random.Generator,
) -> tuple[list[list[int]], list[float], list[bool]]:
    """The client's public-step group for one prompt: (responses, rewards, swapped flags).

    ``pool``: every client's (client, response, reward) on the prompt. ``mode``:
    - ``pubswap``: keep own correct responses; each own incorrect one becomes a correct response
      drawn (with replacement) from *other* clients', kept as is when they have none;
    - ``swapall``: every response drawn from all clients' correct ones (own kept if none);
    - ``none``: the client's own group unchanged.
    """
    group = [list(r) for r in own]
    rewards = [float(r) for r in own_rewards]
    swapped = [False] * len(group)
    if mode == "none":
        return group, rewards, swapped
    if mode == "pubswap":
        donors = [list(r) for c, r, w in pool if c != client and w > 0]
        slots = [j for j, w in enumerate(rewards) if w <= 0]
    elif mode == "swapall":
        donors = [list(r) for _, r, w in pool if w > 0]
        slots = list(range(len(group)))
    else:
        raise ValueError(f"unknown swap mode {mode!r}")
    if not donors:
        return group, rewards, swapped
    for j in slots:
        group[j] = donors[int(rng.integers(len(donors)))]
        rewards[j], swapped[j] = 1.0, True
    return group, rewards, swapped
