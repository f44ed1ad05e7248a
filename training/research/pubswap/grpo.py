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

Cost: the prompts (a one-shot example, ~60 tokens) are ten times longer than the responses
(<= 5 tokens), so sampling and the step run each distinct prompt once and let its G responses
share its keys and values (:func:`_prefix`), instead of G copies of the prompt; the numbers are
those of running each full sequence (tests check both against plain forward passes).

Usage::

    groups = sample(model, tok, encode(tok, items), group=4, max_new_tokens=5, seed=0)
    loss = policy_gradient_step(model, opt, prompt_ids, completions, advantages)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.research.pubswap.tasks import Item, render


def encode(tok: Any, items: Sequence[Item], style: str = "oneshot") -> list[list[int]]:
    """Token ids of each item's full prompt (:func:`~.tasks.render` in ``style``)."""
    return [list(tok(render(it, style), add_special_tokens=False)["input_ids"]) for it in items]


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


def _prefix(model: Any, prompt_ids: Sequence[Sequence[int]], rows: Sequence[int]) -> Any:
    """Run each distinct prompt once and give every output row its prompt's state: (KV cache,
    next-token logits, attention mask, prompt length), rows ``rows`` (prompt indices, repeats
    allowed). Prompts are left-padded with explicit position ids, so a row's numbers do not
    depend on the padding. Differentiable when called with gradients on (the LoRA layers change
    the prompt's keys and values)."""
    import torch

    ids, mask = _left_pad(prompt_ids, 0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
    )
    idx = torch.tensor(list(rows), dtype=torch.long)
    cache = out.cache
    cache.batch_select_indices(idx)
    return cache, out.logits[idx, -1], mask[idx], mask.sum(-1)[idx]


def _decode_loop(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    rows: Sequence[int],
    *,
    max_new_tokens: int,
    eos: int,
    pad: int,
    temperature: float,
    generator: Any,
) -> list[list[int]]:
    """Token-by-token decoding of one completion per row (``temperature`` 0: greedy), sharing
    each prompt's forward pass across its rows; completions are cut after their first EOS."""
    import torch

    with torch.no_grad():
        cache, logits, mask, plen = _prefix(model, prompt_ids, rows)
        done = torch.zeros(len(rows), dtype=torch.bool)
        steps = []
        for t in range(max_new_tokens):
            if temperature > 0:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            steps.append(nxt)
            done = done | (nxt == eos)
            if t == max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=(plen + t)[:, None],
                cache=cache, use_cache=True,
            )  # fmt: skip
            logits = out.logits[:, -1]
    toks = torch.stack(steps, dim=1).tolist()
    return [_cut(r, eos) for r in toks]


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
    """``group`` sampled completions (token ids, through the first EOS) per prompt: plain
    ancestral sampling at ``temperature`` (no top-k or top-p)."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    rows = [p for p in range(len(prompt_ids)) for _ in range(group)]
    flat = _decode_loop(
        model, prompt_ids, rows, max_new_tokens=max_new_tokens, eos=tok.eos_token_id,
        pad=tok.pad_token_id, temperature=temperature, generator=gen,
    )  # fmt: skip
    return [flat[p * group : (p + 1) * group] for p in range(len(prompt_ids))]


def greedy(
    model: Any, tok: Any, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int
) -> list[str]:
    flat = _decode_loop(
        model, prompt_ids, range(len(prompt_ids)), max_new_tokens=max_new_tokens,
        eos=tok.eos_token_id, pad=tok.pad_token_id, temperature=0.0, generator=None,
    )  # fmt: skip
    return decode(tok, flat)


def decode(tok: Any, completions: Sequence[Sequence[int]]) -> list[str]:
    return [str(tok.decode(list(c), skip_special_tokens=True)) for c in completions]


def completion_logprobs(
    model: Any, prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
) -> tuple[Any, Any]:
    """log pi(y_jt | x_j, y_j<t) for every completion token, (B, T), and the mask of real
    tokens; each distinct prompt is run once (its rows share its keys and values)."""
    import torch

    uniq: dict[tuple[int, ...], int] = {}
    rows = [uniq.setdefault(tuple(int(x) for x in p), len(uniq)) for p in prompt_ids]
    cache, first, pmask, plen = _prefix(model, [list(u) for u in uniq], rows)
    t = max(len(c) for c in completions)
    ids = torch.zeros((len(completions), t), dtype=torch.long)
    mask = torch.zeros((len(completions), t), dtype=torch.long)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[i, : len(c)] = 1
    logits = first[:, None]
    if t > 1:
        out = model(
            input_ids=ids[:, :-1], attention_mask=torch.cat([pmask, mask[:, :-1]], dim=1),
            position_ids=plen[:, None] + torch.arange(t - 1)[None], cache=cache,
            use_cache=True,
        )  # fmt: skip
        logits = torch.cat([logits, out.logits], dim=1)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[..., None])[..., 0]
    return logp, mask.bool()


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
) -> float:
    """One step on -sum_j A_j sum_t log pi(y_jt | x_j, y_j<t) / (tokens in the batch).

    Sequences with zero advantage or no tokens are left out; returns the loss (0.0 when no
    sequence carries signal, and then no step is taken)."""
    import torch

    keep = [i for i, (c, a) in enumerate(zip(completions, advantages, strict=True)) if c and a]
    if not keep:
        return 0.0
    logp, mask = completion_logprobs(
        model, [prompt_ids[i] for i in keep], [completions[i] for i in keep]
    )
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
