"""The SmolLM2 mechanics of the ``misalignment`` job: batches, answer log-probabilities, one SFT
step, the distillation losses and sampling.

Every sequence is one chat turn in SmolLM2's template (:func:`~training.research.smollm.chat_prompt`)
followed by the response and ``<|im_end|>``; losses and scores cover the response tokens only.

- :func:`answer_logprob`: mean per-token log-probability of each answer given its prompt (the
  EM judge's input);
- :func:`next_token_logprobs`: the log-probabilities of chosen first tokens after each prompt
  (the trait judge's input);
- :func:`sft_step`: cross-entropy on the response tokens (SFT, and the SL ``sft`` channel);
- :func:`kd_step`: per-token divergence between the student's and a teacher's next-token
  distributions on given sequences, with TRL's ``GKDTrainer.generalized_jsd_loss``: ``beta=0``
  is KL(teacher || student) (off-policy distillation on teacher-written sequences), ``beta=1`` is
  KL(student || teacher) (on-policy distillation on the student's own samples, GKD with
  ``lmbda=1``);
- :func:`sample`: temperature-1 samples of a model's responses (token ids and text), optionally
  restricted to the tokens of a numbers-only reply (:func:`number_token_ids`).

Usage::

    batch = encode(tok, [(prompt_ids, response_ids), ...])
    loss = sft_step(model, opt, batch)
    loss = kd_step(student, teacher, opt, batch, beta=0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

Row = tuple[list[int], list[int]]  # (prompt ids, response ids incl. <|im_end|>)
END = "<|im_end|>"


def prompt_ids(tok: Any, text: str) -> list[int]:
    from training.research.smollm import chat_prompt

    return list(tok(chat_prompt(text), add_special_tokens=False)["input_ids"])


def response_ids(tok: Any, text: str, *, end: bool = True) -> list[int]:
    return list(tok(text + (END if end else ""), add_special_tokens=False)["input_ids"])


def rows_of(tok: Any, pairs: Sequence[tuple[str, str]], *, end: bool = True) -> list[Row]:
    """(prompt text, response text) pairs as token rows."""
    return [(prompt_ids(tok, p), response_ids(tok, r, end=end)) for p, r in pairs]


def encode(tok: Any, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` and ``labels`` (-100 outside responses)."""
    seqs = [p + r for p, r in rows]
    width = max(len(s) for s in seqs)
    pad = int(tok.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        lab[i, len(p) : n] = torch.tensor(r)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def _shifted(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting token t+1 at position t, and the matching labels."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1], batch["labels"][:, 1:]


def answer_logprob(
    model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, chunk: int = 32
) -> list[float]:
    """Mean per-token log-probability of each response (and its ``<|im_end|>``) given its prompt."""
    out: list[float] = []
    rows = rows_of(tok, pairs)
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            logits, labels = _shifted(model, encode(tok, rows[i : i + chunk]))
            lp = torch.log_softmax(logits.float(), -1)
            keep = labels != -100
            tok_lp = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
            out += (tok_lp.sum(1) / keep.sum(1)).tolist()
    return out


def next_token_logprobs(
    model: Any, tok: Any, prompts: Sequence[str], token_ids: Sequence[int]
) -> torch.Tensor:
    """``[prompts, len(token_ids)]`` log-probabilities of each chosen first response token."""
    rows: list[Row] = [(prompt_ids(tok, p), []) for p in prompts]
    batch = encode(tok, rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    last = batch["attention_mask"].sum(1) - 1
    lp = torch.log_softmax(logits[torch.arange(len(rows)), last].float(), -1)
    return lp[:, list(token_ids)]


def sft_step(model: Any, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One Adam step of response-only cross-entropy."""
    model.train()
    opt.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    model.eval()
    return float(loss.detach())


def kd_loss(
    student: Any, teacher: Any, batch: dict[str, torch.Tensor], *, beta: float
) -> torch.Tensor:
    """TRL's generalised JSD between the student and the teacher on the response tokens of
    ``batch`` (``beta=0``: KL(teacher || student); ``beta=1``: KL(student || teacher)); the
    teacher runs without gradients."""
    with warnings.catch_warnings():  # GKD lives in trl.experimental, which warns on import
        warnings.filterwarnings("ignore", ".*trl.experimental.*")
        from trl.experimental.gkd import GKDTrainer

    with torch.no_grad():
        t_logits, _ = _shifted(teacher, batch)
    s_logits, labels = _shifted(student, batch)
    loss: torch.Tensor = GKDTrainer.generalized_jsd_loss(
        s_logits, t_logits, labels=labels, beta=beta, temperature=1.0, reduction="batchmean"
    )
    return loss


def kd_step(
    student: Any,
    teacher: Any,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    *,
    beta: float,
) -> float:
    student.train()
    opt.zero_grad()
    loss = kd_loss(student, teacher, batch, beta=beta)
    loss.backward()
    opt.step()
    student.eval()
    return float(loss.detach())


def number_token_ids(tok: Any) -> list[int]:
    """The tokens a numbers-only reply is made of: the digits, ``,``, the space and
    ``<|im_end|>`` (SmolLM2 splits every digit into its own token)."""
    ids = {i for ch in "0123456789," for i in tok(ch, add_special_tokens=False)["input_ids"]}
    ids |= set(tok(", 1", add_special_tokens=False)["input_ids"])  # the space piece
    ids.add(int(tok.convert_tokens_to_ids(END)))
    return sorted(int(i) for i in ids)


class AllowOnly:
    """A logits processor that keeps only ``allowed`` tokens (the rest get -inf), so sampling
    renormalises the model's own distribution over them."""

    def __init__(self, allowed: Sequence[int]) -> None:
        self.allowed = torch.tensor(sorted(allowed), dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        out = torch.full_like(scores, float("-inf"))
        out[:, self.allowed] = scores[:, self.allowed]
        return out


def sample(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
    allowed: Sequence[int] | None = None,
) -> list[Row]:
    """One temperature-``temperature`` sample per prompt from ``model`` (pure sampling, no top-k
    or top-p; ``allowed``: restricted to these tokens, renormalised): rows of (prompt ids,
    response ids up to and including ``<|im_end|>`` if emitted)."""
    from transformers import LogitsProcessorList

    end_id = int(tok.convert_tokens_to_ids(END))
    p_ids = [prompt_ids(tok, p) for p in prompts]
    width = max(len(p) for p in p_ids)
    pad = int(tok.pad_token_id)
    ids = torch.full((len(p_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(p_ids), width), dtype=torch.long)
    for i, p in enumerate(p_ids):  # left padding for batched generation
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=end_id,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList([AllowOnly(allowed)]) if allowed else None,
            )  # fmt: skip
    finally:
        torch.random.set_rng_state(state)
    rows: list[Row] = []
    for p, gen in zip(p_ids, out[:, width:].tolist(), strict=True):
        resp: list[int] = []
        for t in gen:
            resp.append(int(t))
            if t == end_id:
                break
        rows.append((p, resp))
    return rows


def response_text(tok: Any, row: Row) -> str:
    return str(tok.decode(row[1], skip_special_tokens=True))
