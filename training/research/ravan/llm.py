"""Ravan on SmolLM2-135M-Instruct: federated fine-tuning on flexmerge's yes/no text tasks.

Each client holds questions of the tasks in ``tasks`` (flexmerge's generated yes/no questions,
:func:`training.research.flexmerge.llm.questions`, train items only); at skew ``iid`` every client
draws the tasks evenly, at skew ``p`` (e.g. 0.9) client k draws a share p of its questions from
its primary task ``tasks[k % T]`` and the rest evenly from the others. The methods (LoRA FedAvg,
FFA-LoRA, Ravan; :mod:`..adapters`) adapt the same projections of the last ``layers`` decoder
layers at matched upload. The global model is scored on held-out questions of every task by the
log-probability of " yes" vs " no" as the first answer token (flexmerge's rule).

Speed (2 shared CPU cores): the frozen layers below the first adapted one never change, so the
hidden state entering it is computed once per question text (:func:`prefix_states`, cached per
process) and only the adapted top layers run in training and scoring, with logits only where the
loss or the score reads them. :func:`full_model_logits` is the plain forward the test compares
against (same numbers to float tolerance).

Usage::

    cfg = llm_config(RavanConfig(llm=True), seed=0, method="ravan", skew=0.9)
    exp = llm_experiment("ravan-0.9-s0", cfg, rounds=4)
    (res,) = InProcessBackend().run([exp])
    llm_accuracy(cfg, res.final)            # {"big": ..., ..., "mean": ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from training.research.federated import Arrays, FedExperiment
from training.research.ravan.config import RavanConfig

LOCAL_STEP = "training.research.ravan.llm:local_llm"


def _skew_name(s: float | None) -> str:
    return "iid" if s is None else f"{s:g}"


def llm_config(
    cfg: RavanConfig, *, seed: int, method: str, skew: float | None, lr: float | None = None
) -> dict[str, Any]:
    """The JSON config every client rebuilds its data and model from."""
    return {
        "seed": seed, "method": method, "skew": skew,
        "lr": float(lr if lr is not None else cfg.llm_lr), "clients": cfg.llm_clients,
        "local_steps": cfg.llm_local_steps, "batch": cfg.llm_batch,
        "per_client": cfg.llm_per_client, "tasks": cfg.llm_task_list(),
        "targets": cfg.llm_target_list(), "layers": cfg.llm_layers,
        "lora_rank": cfg.llm_lora_rank, "heads": cfg.heads, "eval": cfg.llm_eval,
    }  # fmt: skip


# ---------------------------------------------------------------- the frozen base and its prefix


@lru_cache(maxsize=1)
def _base() -> tuple[Any, Any]:
    """One frozen SmolLM2 per process (never adapted: adapters go on copies)."""
    from training.research.smollm import load_smollm2

    return load_smollm2()


def _inner(model: Any) -> Any:
    """The ``LlamaForCausalLM`` under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def adapted_layers(cfg: Mapping[str, Any]) -> list[int]:
    n = int(_base()[0].config.num_hidden_layers)
    return list(range(n - int(cfg["layers"]), n))


@lru_cache(maxsize=4096)
def _encoded(text: str, answer: str) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """Token ids of prompt + answer (flexmerge's format), the prompt length, the answer ids."""
    from training.research.flexmerge.llm import Question, encode_batch

    tok = _base()[1]
    b = encode_batch(tok, [Question("", text, answer)], with_answer=True)
    ids = b["input_ids"][0].tolist()
    lab = b["labels"][0].tolist()
    prompt_len = next(i for i, v in enumerate(lab) if v != -100)
    return tuple(ids), prompt_len, tuple(ids[prompt_len:])


_PREFIX: dict[tuple[str, str, int], Any] = {}


def _run_layers(model: Any, h: Any, start: int, end: int) -> Any:
    """Decoder layers ``start..end-1`` of ``model`` on right-padded states ``h`` (B, T, d).

    No attention mask: causal attention alone, so a real token never sees the padding after it."""
    import torch

    inner = _inner(model).model
    pos = torch.arange(h.shape[1]).unsqueeze(0)
    pe = inner.rotary_emb(h, position_ids=pos)
    for layer in inner.layers[start:end]:
        h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
    return h


def prefix_states(qs: Sequence[Any], first: int, *, chunk: int = 16) -> list[Any]:
    """The hidden state entering layer ``first`` of the frozen base, one (T_q, d) tensor per
    question (prompt and answer tokens), computed once per text and cached in the process."""
    import torch

    model, _ = _base()
    keys = [(q.text, q.answer, first) for q in qs]
    todo = list(dict.fromkeys(k for k in keys if k not in _PREFIX))
    with torch.no_grad():
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            seqs = [_encoded(t, a)[0] for t, a, _ in part]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), int(_base()[1].pad_token_id), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, : len(s)] = torch.tensor(s)
            h = _run_layers(model, model.model.embed_tokens(ids), 0, first)
            for j, (k, s) in enumerate(zip(part, seqs, strict=True)):
                _PREFIX[k] = h[j, : len(s)].clone()
    return [_PREFIX[k] for k in keys]


def _top_logits(model: Any, qs: Sequence[Any], first: int, rows: Sequence[Sequence[int]]) -> Any:
    """Logits at the positions ``rows[i]`` of question i, running layers ``first..`` of ``model``
    on the cached prefix states; returns (sum of len(rows[i]), vocab)."""
    import torch

    states = prefix_states(qs, first)
    width = max(s.shape[0] for s in states)
    h = torch.zeros(len(states), width, states[0].shape[1], dtype=states[0].dtype)
    for i, s in enumerate(states):
        h[i, : s.shape[0]] = s
    inner = _inner(model)
    n = int(inner.config.num_hidden_layers)
    h = inner.model.norm(_run_layers(model, h, first, n))
    bi = torch.tensor([i for i, r in enumerate(rows) for _ in r])
    ti = torch.tensor([t for r in rows for t in r])
    return inner.lm_head(h[bi, ti])


def answer_loss(model: Any, qs: Sequence[Any], first: int) -> Any:
    """Mean cross-entropy of the answer tokens (flexmerge's target: the answer and <|im_end|>)."""
    import torch

    rows, targets = [], []
    for q in qs:
        _, p, ans = _encoded(q.text, q.answer)
        rows.append(list(range(p - 1, p - 1 + len(ans))))
        targets += list(ans)
    logits = _top_logits(model, qs, first, rows)
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets))


def answer_scores(model: Any, qs: Sequence[Any], first: int, *, chunk: int = 32) -> list[bool]:
    """Per question: does the first answer token prefer the right one of yes/no?"""
    import torch

    from training.research.flexmerge.llm import answer_ids

    yes, no = answer_ids(_base()[1])
    out: list[bool] = []
    with torch.no_grad():
        for i in range(0, len(qs), chunk):
            part = qs[i : i + chunk]
            rows = [[_encoded(q.text, q.answer)[1] - 1] for q in part]
            logits = _top_logits(model, part, first, rows)
            says_yes = (logits[:, yes] > logits[:, no]).tolist()
            out += [bool(s) == (q.answer == "yes") for s, q in zip(says_yes, part, strict=True)]
    return out


def full_model_logits(model: Any, q: Any) -> Any:
    """The plain HF forward's logits at the last prompt token (what the cached path must equal)."""
    import torch

    ids, p, _ = _encoded(q.text, q.answer)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids[:p]])).logits[0, -1]


# ---------------------------------------------------------------- data


def client_questions(cfg: Mapping[str, Any]) -> list[list[Any]]:
    """Each client's training questions: ``per_client`` of them, task shares set by the skew
    (built once per setting and process: every round's client step reads them)."""
    skew = None if cfg["skew"] is None else float(cfg["skew"])
    return _client_questions(
        tuple(cfg["tasks"]), int(cfg["clients"]), int(cfg["per_client"]), int(cfg["seed"]), skew
    )


@lru_cache(maxsize=8)
def _client_questions(
    tasks: tuple[str, ...], k: int, n: int, seed: int, skew: float | None
) -> list[list[Any]]:
    from training.research.flexmerge.llm import questions

    counts = np.zeros((k, len(tasks)), dtype=int)
    for c in range(k):
        if skew is None:
            share = np.full(len(tasks), 1.0 / len(tasks))
        else:
            share = np.full(len(tasks), (1.0 - skew) / max(1, len(tasks) - 1))
            share[c % len(tasks)] = skew
        counts[c] = np.floor(share * n).astype(int)
        rest = n - counts[c].sum()  # to the largest remainders
        counts[c, np.argsort(-(share * n - counts[c]), kind="stable")[:rest]] += 1
    pools = {t: questions(t, int(counts[:, j].sum()), seed=seed, split="train")
             for j, t in enumerate(tasks)}  # fmt: skip
    out: list[list[Any]] = [[] for _ in range(k)]
    for j, t in enumerate(tasks):
        at = 0
        for c in range(k):
            out[c] += pools[t][at : at + counts[c, j]]
            at += counts[c, j]
    rng = np.random.default_rng([seed, 61, k])
    return [[qs[i] for i in rng.permutation(len(qs))] for qs in out]


def test_questions(cfg: Mapping[str, Any]) -> dict[str, list[Any]]:
    from training.research.flexmerge.llm import questions

    return {t: questions(t, int(cfg["eval"]), seed=int(cfg["seed"]), split="test")
            for t in cfg["tasks"]}  # fmt: skip


# ---------------------------------------------------------------- models and the client step


def spec_of(cfg: Mapping[str, Any]) -> Any:
    from training.research.ravan.adapters import AdapterSpec, target_dims

    layers = adapted_layers(cfg)
    dims = target_dims(_base()[0], list(cfg["targets"]), layers)
    return AdapterSpec.matched(
        str(cfg["method"]), dims, lora_rank=int(cfg["lora_rank"]), heads=int(cfg["heads"]),
        layers=layers,
    )  # fmt: skip


@lru_cache(maxsize=3)
def _built(
    seed: int, method: str, targets: tuple[str, ...], layers: int, lora_rank: int, heads: int
) -> tuple[Any, Any, Arrays]:
    import copy

    from training.research.ravan.adapters import attach, initial_uploads

    cfg = {"method": method, "targets": list(targets), "layers": layers,
           "lora_rank": lora_rank, "heads": heads}  # fmt: skip
    spec = spec_of(cfg)
    model = attach(copy.deepcopy(_base()[0]), spec, seed=seed + 7)
    return model, spec, initial_uploads(model, spec)


def adapted_model(cfg: Mapping[str, Any], arrays: Arrays | None = None) -> tuple[Any, Any]:
    """SmolLM2 with the method's adapters (shared seed) and ``arrays`` loaded (default: ΔW = 0).
    One model per process and setting; every use loads all of its trainable parameters."""
    from training.research.ravan.adapters import load

    model, spec, init = _built(
        int(cfg["seed"]), str(cfg["method"]), tuple(cfg["targets"]), int(cfg["layers"]),
        int(cfg["lora_rank"]), int(cfg["heads"]),
    )  # fmt: skip
    load(model, spec, init if arrays is None else arrays)
    return model, spec


def local_llm(
    config: Mapping[str, Any], clients: Sequence[int], arrays: Arrays, round_cfg: Mapping[str, Any]
) -> list[tuple[Arrays, float]]:
    """``local_steps`` Adam steps on batches of the client's questions (drawn from the client's
    own stream, seeded by seed, client and round); replies with the upload and its sample count."""
    import torch

    from training.research.ravan.adapters import uploads

    data = client_questions(config)
    first = adapted_layers(config)[0]
    out = []
    for c in clients:
        qs = data[c]
        model, spec = adapted_model(config, arrays)
        rng = np.random.default_rng([int(config["seed"]), 62, c, int(round_cfg["round"])])
        torch.manual_seed(int(config["seed"]) * 1000 + c)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=float(config["lr"]))
        model.train()
        for _ in range(int(config["local_steps"])):
            pick = rng.choice(len(qs), size=min(int(config["batch"]), len(qs)), replace=False)
            opt.zero_grad()
            answer_loss(model, [qs[i] for i in pick], first).backward()
            opt.step()
        model.eval()
        out.append((uploads(model, spec), float(len(qs))))
    return out


def llm_experiment(
    name: str, cfg: Mapping[str, Any], *, rounds: int, keep_history: bool = False
) -> FedExperiment:
    from training.research.ravan.adapters import initial_uploads

    model, spec = adapted_model(cfg)
    return FedExperiment(
        name, LOCAL_STEP, dict(cfg), int(cfg["clients"]), initial_uploads(model, spec),
        [{"round": r} for r in range(rounds)], keep_history=keep_history,
    )  # fmt: skip


def llm_accuracy(cfg: Mapping[str, Any], arrays: Arrays | None) -> dict[str, float]:
    """Test accuracy of the global model per task and their mean (``arrays=None``: the base)."""
    model, _ = adapted_model(cfg, arrays)
    first = adapted_layers(cfg)[0]
    out = {t: float(np.mean(answer_scores(model, qs, first)))
           for t, qs in test_questions(cfg).items()}  # fmt: skip
    out["mean"] = float(np.mean(list(out.values())))
    return out


def layer_deltas(cfg: Mapping[str, Any], arrays: Arrays) -> dict[str, np.ndarray]:
    """ΔW of every adapted SmolLM2 projection with ``arrays`` loaded."""
    from training.research.ravan.exactness import model_deltas

    model, _ = adapted_model(cfg, arrays)
    return model_deltas(model)


def aggregation_errors_llm(cfg: Mapping[str, Any], clients: Sequence[int]) -> float:
    """One round of the real client step from the initial adapters on ``clients``; the relative
    error of the server's ΔW (from the weighted mean of uploads) vs the mean client ΔW."""
    from training.research.ravan.adapters import initial_uploads
    from training.research.ravan.exactness import relative_error

    model, spec = adapted_model(cfg)
    replies = local_llm(cfg, list(clients), initial_uploads(model, spec), {"round": 0})
    return relative_error(lambda a: layer_deltas(cfg, a), replies)
