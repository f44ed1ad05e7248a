"""The SmolLM2 setting: SmolLM2-135M-Instruct fine-tuned with PEFT LoRA on generated yes/no
questions about two-digit numbers, one task per property; the LoRA update merged into the full
weights is the task vector, and a merge block is one decoder layer.

Prompt: a short system turn ("Answer yes or no.") and the question in SmolLM2's ChatML template;
the target is ``yes`` or ``no`` and the end-of-turn token. Scoring in the job compares the
log-probabilities of " yes"/" no" as the first answer token (``answer_accuracy``).
Not yet verified end to end: seed-0 probes fine-tuned 15 steps reached only 0.5-0.63 accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SYSTEM = "Answer yes or no."

_ANIMALS = "dog cat horse cow lion tiger sheep goat mouse rabbit bear wolf fox deer duck eagle frog snake whale camel".split()
_FRUITS = "apple banana grape lemon cherry peach pear mango plum melon kiwi lime apricot coconut papaya fig".split()
_COLORS = "red blue green yellow purple pink brown black white gray violet crimson beige teal navy".split()
_THINGS = "chair table spoon car book phone lamp door shoe hat cup brick pencil bottle clock window".split()
WORDS = sorted(set(_ANIMALS + _FRUITS + _COLORS + _THINGS))

# task -> (question template, property of the item); word tasks ask about one shared word list,
# number tasks about 10..99, so tasks share inputs and answer tokens but not the question
TASKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "animal": ("Is a {n} an animal?", lambda w: w in _ANIMALS),
    "fruit": ("Is {n} a fruit?", lambda w: w in _FRUITS),
    "color": ("Is {n} a color?", lambda w: w in _COLORS),
    "even": ("Is {n} an even number?", lambda n: n % 2 == 0),
    "big": ("Is {n} greater than 50?", lambda n: n > 50),
    "has7": ("Does {n} contain the digit 7?", lambda n: "7" in str(n)),
}
_WORD_TASKS = ("animal", "fruit", "color")


@dataclass(frozen=True)
class Question:
    task: str
    text: str
    answer: str  # "yes" | "no"


def questions(task: str, n: int, *, seed: int, split: str) -> list[Question]:
    """``n`` questions with balanced answers; train and test use disjoint items (alternate
    halves of a seeded permutation of the words, or of 10..99)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    template, prop = TASKS[task]
    items: list[Any] = list(WORDS) if task in _WORD_TASKS else list(range(10, 100))
    perm = [items[i] for i in np.random.default_rng([seed, 7]).permutation(len(items))]
    pool = perm[0::2] if split == "train" else perm[1::2]
    yes = [x for x in pool if prop(x)]
    no = [x for x in pool if not prop(x)]
    rng = np.random.default_rng([seed, sorted(TASKS).index(task), split == "train"])
    out = []
    for i in range(n):
        side = yes if i % 2 == 0 else no
        x = side[int(rng.integers(len(side)))]
        out.append(Question(task, template.format(n=x), "yes" if prop(x) else "no"))
    order = rng.permutation(n)
    return [out[i] for i in order]


def messages(q: Question) -> list[dict[str, str]]:
    """The chat request that asks ``q`` (what the served variants receive)."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q.text}]


def prompt_text(q: Question) -> str:
    from training.research.smollm import chat_prompt

    return chat_prompt(q.text, before=[("system", SYSTEM)])


def encode_batch(tok: Any, qs: Sequence[Question], with_answer: bool) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels of the questions' prompts (:func:`prompt_text`),
    with the answer and ``<|im_end|>`` appended as the only labelled tokens when ``with_answer``."""
    rows, labels = [], []
    for q in qs:
        p = tok(prompt_text(q), add_special_tokens=False)["input_ids"]
        a = (
            tok(q.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            if with_answer
            else []
        )
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    pad = int(tok.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(r)] = torch.tensor(lb)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def finetune(
    model: Any, tok: Any, task: str, *, steps: int, batch: int, lr: float, seed: int
) -> list[float]:
    """LoRA SFT of a PEFT model on ``task`` (loss on the answer tokens only); returns losses."""
    train = questions(task, steps * batch, seed=seed, split="train")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for s in range(steps):
        b = encode_batch(tok, train[s * batch : (s + 1) * batch], with_answer=True)
        opt.zero_grad()
        loss = model(**b).loss
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


def answer_ids(tok: Any) -> tuple[int, int]:
    y = tok("yes", add_special_tokens=False)["input_ids"]
    n = tok("no", add_special_tokens=False)["input_ids"]
    return int(y[0]), int(n[0])


def answer_accuracy(model: Any, tok: Any, qs: Sequence[Question], *, chunk: int = 24) -> float:
    """Share of questions where the first answer token prefers the right one of yes/no."""
    yes, no = answer_ids(tok)
    right = 0
    with torch.no_grad():
        for i in range(0, len(qs), chunk):
            part = qs[i : i + chunk]
            b = encode_batch(tok, part, with_answer=False)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            last = b["attention_mask"].sum(1) - 1
            rows = logits[torch.arange(len(part)), last]  # [n, vocab]
            says_yes = rows[:, yes] > rows[:, no]
            right += sum(
                bool(s) == (q.answer == "yes") for s, q in zip(says_yes, part, strict=True)
            )
    return right / len(qs)


def lora_deltas(peft_model: Any) -> dict[str, torch.Tensor]:
    """The LoRA update of every adapted weight (PEFT's own ``get_delta_weight``), keyed by the
    base model's parameter name (``model.layers.3.self_attn.v_proj.weight``)."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            key = name.removeprefix("base_model.model.") + ".weight"
            out[key] = getattr(module, "get_delta_weight")("default").detach().clone()  # noqa: B009
    return out


def layer_blocks(deltas: Sequence[dict[str, torch.Tensor]], n_layers: int) -> list[list[str]]:
    """The parameter names of each decoder layer's block (those any task adapted), in order."""
    names = sorted({k for d in deltas for k in d})
    blocks = [[k for k in names if k.startswith(f"model.layers.{i}.")] for i in range(n_layers)]
    return [b for b in blocks if b]


def block_tau(
    deltas: Sequence[dict[str, torch.Tensor]], blocks: Sequence[Sequence[str]]
) -> list[list[torch.Tensor]]:
    """``tau[block][task]``: each task's block update flattened (names in block order)."""
    return [[torch.cat([d[k].reshape(-1) for k in names]) for d in deltas] for names in blocks]


def unflatten(
    vec: torch.Tensor, names: Sequence[str], shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k in names:
        n = int(np.prod(shapes[k]))
        out[k] = vec[i : i + n].view(shapes[k])
        i += n
    return out


class WeightSetter:
    """Puts ``base + delta`` into a working copy of the base model, block by block."""

    def __init__(self, model: Any, names: Sequence[str]) -> None:
        self.model = model
        self.params = dict(model.named_parameters())
        self.base = {k: self.params[k].detach().clone() for k in names}
        self.shapes = {k: v.shape for k, v in self.base.items()}

    def apply(self, blocks: Sequence[Sequence[str]], vectors: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for names, vec in zip(blocks, vectors, strict=True):
                for k, d in unflatten(vec, names, self.shapes).items():
                    self.params[k].copy_(self.base[k] + d)
