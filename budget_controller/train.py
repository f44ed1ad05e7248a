"""GRPO for the budget policy over the replay environment (no critic, groups of rollouts).

One step: draw ``problems_per_step`` training problems (each with its own global budget ``B``,
log-uniform per turn), roll each out ``num_generations`` times with actions sampled from the
current policy, score each trajectory (``rewards.trajectory_reward``), normalise within its group
and apply that advantage to every turn's action (paper, section 3.2). Then ``inner_epochs``
updates of TRL's GRPO objective: the clipped surrogate ``min(rho * A, clip(rho, 1 +- eps) * A)``
averaged over all (episode, turn) actions, minus ``beta`` times the k3 estimate of KL to the
frozen initial policy. TRL's ``GRPOTrainer`` itself is not used: it samples completions from a
causal language model, and this policy is a small classifier over budget levels (the paper's
budgeter is an LLM; ours is not), so the objective is written out here in a few lines.

GRPO starts from a sensible policy, not a uniform one: ``init_steps`` of supervised learning
towards the init rule (``init_levels``: the static share of what is left, kept between 1x and 8x
the predicted length, so short turns get less and long ones more than static gives them); the KL
term then keeps GRPO near that start. The action set is the served one (``config.py``).

Validation (greedy actions on fixed ``val`` problems) every ``eval_every`` steps keeps the best
checkpoint. Usage::

    result = train(TrainConfig(seed=0), EnvConfig())
    result.path  # budget_controller/artifacts/tab_seed0.pt
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F
from tqdm import tqdm

from budget_controller.config import EnvConfig, PolicyConfig, TrainConfig
from budget_controller.data import Problems, SolverData
from budget_controller.env import Allocator, FloatArray, ReplayEnv, Rollout
from budget_controller.features import FeatureSpec, TurnState, encode
from budget_controller.length import LengthPredictor
from budget_controller.model import BudgetPolicy
from budget_controller.rewards import group_advantages, trajectory_reward

log = logging.getLogger(__name__)


def build_spec(data: SolverData) -> FeatureSpec:
    tr = data.split == "train"
    pred = LengthPredictor.fit(data.embeddings[tr], data.lengths[tr], data.correct[tr])
    return FeatureSpec(unit=data.median_length, levels=list(data.cfg.level_list), predictor=pred)


@dataclass
class Trace:
    """Per (episode, turn) action records collected during one batch of rollouts."""

    emb: list[np.ndarray] = field(default_factory=list)
    scal: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    logp: list[np.ndarray] = field(default_factory=list)
    episode: list[np.ndarray] = field(default_factory=list)


MEAN_TURNS = 3.0  # the init rule's guess of a conversation's length (problems have 2-4 turns)


def init_levels(spec: FeatureSpec, s: TurnState) -> npt.NDArray[np.int64]:
    """The init rule: the level nearest (in log) to an even share of what is left over the turns
    a conversation usually still has, relative to this turn's predicted length."""
    left = np.maximum(s.budget - s.used, 1.0)
    share = left / np.maximum(MEAN_TURNS - s.turn, 1.0)
    pred = np.exp(spec.predictor.predict(s.current)[0])
    want = np.log(np.maximum(share / np.maximum(pred, 1.0), 1e-3))
    lv = np.log(np.asarray(spec.levels, dtype=np.float64))
    return np.abs(want[:, None] - lv[None, :]).argmin(axis=1).astype(np.int64)


def fit_init(
    policy: BudgetPolicy,
    spec: FeatureSpec,
    env: ReplayEnv,
    data: SolverData,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> float:
    """``cfg.init_steps`` of cross-entropy towards ``init_levels`` on states of training problems
    played out by the init rule itself; returns the final agreement with the rule."""
    if cfg.init_steps <= 0:
        return float("nan")
    all_subq = policy.cfg.all_subq
    embs: list[np.ndarray] = []
    scals: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    p = data.sample_problems("train", 4096, rng, per_turn=cfg.budget_range)

    def teacher(s: TurnState, t: int) -> FloatArray:
        a = init_levels(spec, s)
        live = p.questions[:, t] >= 0
        emb, scal = encode(spec, s, all_subq=all_subq)
        embs.append(emb[live])
        scals.append(scal[live])
        acts.append(a[live])
        return spec.tokens(a, s.current)

    env.rollout(p, teacher)
    E = torch.from_numpy(np.concatenate(embs))
    S = torch.from_numpy(np.concatenate(scals))
    A = torch.from_numpy(np.concatenate(acts))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy.train()
    for _ in range(cfg.init_steps):
        idx = torch.randint(0, len(A), (1024,), generator=gen)
        loss = F.cross_entropy(policy(E[idx], S[idx]), A[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    with torch.no_grad():
        return float((policy(E, S).argmax(dim=1) == A).float().mean())


def policy_allocator(
    policy: BudgetPolicy,
    spec: FeatureSpec,
    p: Problems,
    *,
    greedy: bool,
    generator: torch.Generator | None = None,
    trace: Trace | None = None,
) -> Allocator:
    all_subq = policy.cfg.all_subq

    def allocate(s: TurnState, t: int) -> FloatArray:
        emb, scal = encode(spec, s, all_subq=all_subq)
        with torch.no_grad():
            logits = policy(torch.from_numpy(emb), torch.from_numpy(scal))
        if greedy:
            a = logits.argmax(dim=1)
        else:
            a = torch.multinomial(F.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
        if trace is not None:
            live = np.flatnonzero(p.questions[:, t] >= 0)
            logp = F.log_softmax(logits, dim=1).gather(1, a[:, None]).squeeze(1)
            trace.emb.append(emb[live])
            trace.scal.append(scal[live])
            trace.action.append(a.numpy()[live])
            trace.logp.append(logp.numpy()[live])
            trace.episode.append(live)
        return spec.tokens(a.numpy(), s.current)

    return allocate


@dataclass
class TrainResult:
    path: Path
    history: list[dict[str, float]]
    best: dict[str, float]
    seconds: float


def _reward(out: Rollout, cfg: TrainConfig) -> FloatArray:
    """Each episode's reward: turns and problem solved, minus the hinge and the token cost."""
    return trajectory_reward(
        out.solved,
        out.turn_accuracy,
        out.asked.sum(axis=1),
        out.tokens,
        out.budget,
        problem_weight=cfg.problem_weight,
        over_penalty=cfg.over_penalty,
        token_cost=cfg.token_cost,
    )


def _validate(
    policy: BudgetPolicy, spec: FeatureSpec, env: ReplayEnv, val: Problems, cfg: TrainConfig
) -> dict[str, float]:
    out = env.rollout(val, policy_allocator(policy, spec, val, greedy=True))
    r = _reward(out, cfg)
    return {
        "val_reward": float(r.mean()),
        "val_accuracy": float(out.solved.mean()),
        "val_turn_accuracy": float(out.turn_accuracy.mean()),
        "val_tokens": float(out.tokens.mean()),
    }


def train(
    cfg: TrainConfig,
    env_cfg: EnvConfig,
    *,
    data: SolverData | None = None,
    name: str | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = data or SolverData.load(env_cfg)
    spec = build_spec(data)
    env = ReplayEnv(data, spec)
    pcfg = PolicyConfig(num_levels=len(spec.levels), all_subq=cfg.all_subq)
    policy = BudgetPolicy(pcfg)
    agreement = fit_init(policy, spec, env, data, cfg, np.random.default_rng(50_000 + cfg.seed))
    log.info("init rule agreement after %d supervised steps: %.3f", cfg.init_steps, agreement)
    ref = copy.deepcopy(policy).requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    val = data.sample_problems(
        "val", 1024, np.random.default_rng(10_000 + cfg.seed), per_turn=cfg.budget_range
    )
    name = name or ("tab_all_subq" if cfg.all_subq else "tab") + f"_seed{cfg.seed}"
    path = Path(cfg.out) / f"{name}.pt"
    history: list[dict[str, float]] = []
    best: dict[str, float] = {"val_reward": -np.inf}
    init_row = {"step": 0.0, "init_agreement": agreement, **_validate(policy, spec, env, val, cfg)}
    history.append(init_row)
    best = dict(init_row)
    policy.save(path, spec=spec, step=0, metrics=best)
    G = cfg.num_generations
    bar = tqdm(range(1, cfg.steps + 1), desc=f"grpo {name}", disable=not progress, mininterval=1)
    for step in bar:
        p = data.sample_problems(
            "train", cfg.problems_per_step, rng, per_turn=cfg.budget_range
        ).repeat(G)
        trace = Trace()
        policy.eval()
        out = env.rollout(
            p, policy_allocator(policy, spec, p, greedy=False, generator=gen, trace=trace)
        )
        R = _reward(out, cfg)
        adv_ep = group_advantages(R, G, scale=cfg.scale_rewards)
        emb = torch.from_numpy(np.concatenate(trace.emb))
        scal = torch.from_numpy(np.concatenate(trace.scal))
        act = torch.from_numpy(np.concatenate(trace.action))
        logp_old = torch.from_numpy(np.concatenate(trace.logp))
        adv = torch.from_numpy(adv_ep[np.concatenate(trace.episode)])
        with torch.no_grad():
            logp_ref = F.log_softmax(ref(emb, scal), dim=1).gather(1, act[:, None]).squeeze(1)
        policy.train()
        stats: dict[str, float] = {}
        for _ in range(cfg.inner_epochs):
            logp = F.log_softmax(policy(emb, scal), dim=1).gather(1, act[:, None]).squeeze(1)
            ratio = torch.exp(logp - logp_old)
            surr = torch.minimum(
                ratio * adv, torch.clamp(ratio, 1 - cfg.epsilon, 1 + cfg.epsilon) * adv
            )
            d = logp_ref - logp
            kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative (TRL's estimator)
            loss = -(surr - cfg.beta * kl).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            stats = {"loss": float(loss.detach()), "kl": float(kl.mean().detach())}
        row = {
            "step": float(step),
            "reward": float(R.mean()),
            "accuracy": float(out.solved.mean()),
            "turn_accuracy": float(out.turn_accuracy.mean()),
            "tokens": float(out.tokens.mean()),
            **stats,
        }
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row.update(_validate(policy, spec, env, val, cfg))
            if row["val_reward"] > best["val_reward"]:
                best = dict(row)
                policy.save(path, spec=spec, step=step, metrics=best)
        if not np.isfinite(row["loss"]):
            raise FloatingPointError(f"GRPO loss is not finite at step {step}")
        history.append(row)
        if on_step is not None:
            on_step(row)
        bar.set_postfix(
            r=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.3f}", kl=f"{row['kl']:.3f}"
        )
    return TrainResult(path=path, history=history, best=best, seconds=time.time() - t0)


def load_policy(path: Path | str) -> tuple[BudgetPolicy, FeatureSpec, dict[str, Any]]:
    return BudgetPolicy.from_checkpoint(path)
