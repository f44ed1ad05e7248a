"""TAB's knobs, grouped by concern: the environment, the policy network, GRPO, evaluation.

Defaults follow the paper (Jali, Nayak, Joshi, arXiv 2604.05164, "Not All Turns Are Equally Hard")
where our setting allows, and say where they had to change:

- Budget levels: the paper picks from {256, 512, 1024, 2048, 4096} tokens for a reasoning solver.
  Our solvers' recorded MMLU-Pro answers are far shorter (median 83 SmolLM2 tokens, long tail),
  so a level is a multiple of the sub-question's length as predicted from its embedding
  (``length.py``; the multiples span 1x to 8x); the global budgets are multiples of the median
  length per turn. With absolute levels (median * 2**k) GRPO from a uniform policy found too few
  solved problems (about 3%) to learn from in minutes.
- One action set for training, evaluation and serving: every level is at least the predicted
  length, so every turn gets a real attempt (or all that is left of ``B``). There is no "skip"
  (a one-token grant once a problem is lost): the gateway never gives up a person's turn, so a
  policy trained with one would be served with an action set it never learnt.
- Reward: the answer is worth something turn by turn, as in a conversation with a person (a
  later turn is still worth answering after an earlier one failed): ``problem_weight`` mixes the
  fraction of turns answered correctly with whole-problem success.
- The paper's penalty ``acc - lambda * max(0, sum_t b_t - B)`` (lambda = 0.001 per token for
  budgets in the thousands) is kept as ``over_penalty`` per budget-fraction, plus a small
  ``token_cost`` per budget-fraction actually generated: the controller clamps every turn to what
  is left (as the gateway must), so the hinge alone never asks the policy to save tokens.
- GRPO: group-normalised trajectory advantage on every turn's action, clipped surrogate, k3 KL
  to the initial (reference) policy, as in TRL's ``GRPOTrainer`` (``epsilon``, ``beta``,
  ``num_generations`` carry TRL's names).

Usage::

    cfg = TrainConfig(seed=1, all_subq=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.minilm import EMBED_DIM


@dataclass
class EnvConfig:
    """How multi-turn problems are built from MMLU-Pro's recorded responses."""

    dataset: str = field(default="mmlu_pro", metadata={"help": "derived data set to build from"})
    solvers: str = field(
        default="Meta-Llama-3_1-70B,Qwen1.5-72B-Chat,gemini-1.5-flash-002,Meta-Llama-3_1-8B-Instruct",
        metadata={
            "help": "comma-separated solver pool; each episode draws one solver, unseen by the policy"
        },
    )
    min_turns: int = field(default=2, metadata={"help": "fewest sub-questions per problem"})
    max_turns: int = field(default=4, metadata={"help": "most sub-questions per problem"})
    budget_multiples: str = field(
        default="1.5,2,3,4,6,8",
        metadata={"help": "global budgets B as multiples of turns * median length (eval grid)"},
    )
    levels: str = field(
        default="1,1.25,1.5,2,2.5,3,4,6,8",
        metadata={"help": "actions: multiples (>= 1) of the predicted length; no skip action"},
    )

    def __post_init__(self) -> None:
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError("need 1 <= min_turns <= max_turns")
        if not self.solver_list:
            raise ValueError("at least one solver model is needed")
        if not self.level_list or min(self.level_list) < 1:
            raise ValueError(
                "levels are multiples >= 1 of the predicted length: every turn gets a real "
                "attempt (the gateway never skips a turn, so neither does training)"
            )

    @property
    def solver_list(self) -> list[str]:
        return [s.strip() for s in self.solvers.split(",") if s.strip()]

    @property
    def multiples(self) -> list[float]:
        return [float(x) for x in self.budget_multiples.split(",")]

    @property
    def level_list(self) -> list[float]:
        return [float(x) for x in self.levels.split(",")]


@dataclass
class PolicyConfig:
    """The budget policy network: a small MLP over the conversation state."""

    embed_dim: int = field(default=EMBED_DIM, metadata={"help": "query embedding size (MiniLM)"})
    proj_dim: int = field(default=32, metadata={"help": "each embedding is projected to this"})
    hidden: int = field(default=128, metadata={"help": "MLP width"})
    num_levels: int = field(default=9, metadata={"help": "number of budget levels (actions)"})
    all_subq: bool = field(
        default=False, metadata={"help": "TAB All-SubQ: also see the remaining sub-questions"}
    )


@dataclass
class TrainConfig:
    """GRPO over the replay environment (groups of rollouts per problem)."""

    seed: int = field(default=0, metadata={"help": "seed for problems, init and sampling"})
    all_subq: bool = field(default=False, metadata={"help": "train the All-SubQ variant"})
    steps: int = field(default=150, metadata={"help": "GRPO iterations"})
    init_steps: int = field(
        default=300,
        metadata={"help": "supervised steps towards the init rule before GRPO (0 = uniform)"},
    )
    problems_per_step: int = field(default=64, metadata={"help": "distinct problems per step"})
    num_generations: int = field(default=16, metadata={"help": "rollouts per problem (TRL's G)"})
    inner_epochs: int = field(default=2, metadata={"help": "policy updates per batch (TRL mu)"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    epsilon: float = field(default=0.2, metadata={"help": "PPO-style clip range"})
    beta: float = field(default=0.005, metadata={"help": "KL weight to the reference policy"})
    scale_rewards: str = field(
        default="batch", metadata={"help": "advantage scaling: group, batch or none (TRL's names)"}
    )
    problem_weight: float = field(
        default=0.5,
        metadata={"help": "reward weight of whole-problem success (the rest: turns correct)"},
    )
    over_penalty: float = field(
        default=0.1, metadata={"help": "lambda on max(0, sum of requested budgets - B) / B"}
    )
    token_cost: float = field(
        default=0.05, metadata={"help": "reward cost of generated tokens, per budget B"}
    )
    budget_per_turn: str = field(
        default="1,10",
        metadata={"help": "training B per turn, log-uniform in this range of median lengths"},
    )
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    eval_every: int = field(default=25, metadata={"help": "validation every N steps"})
    out: str = field(default="budget_controller/artifacts", metadata={"help": "checkpoint folder"})

    @property
    def budget_range(self) -> tuple[float, float]:
        lo, hi = (float(x) for x in self.budget_per_turn.split(","))
        return lo, hi

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("GRPO needs at least two rollouts per problem")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError("scale_rewards must be group, batch or none")
        if not 0 < self.epsilon < 1:
            raise ValueError("epsilon must be in (0, 1)")
        if not 0 <= self.problem_weight <= 1:
            raise ValueError("problem_weight must be in [0, 1]")


@dataclass
class EvalConfig:
    """Seeds, test size and training length for ``junction budget eval``."""

    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated training seeds"})
    num_problems: int = field(default=4000, metadata={"help": "test problems per seed"})
    steps: int = field(default=150, metadata={"help": "GRPO steps per policy"})
    checkpoints: str = field(
        default="", metadata={"help": "folder with tab[_all_subq]_seed{N}.pt; empty = train now"}
    )

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]


@dataclass
class LiveConfig:
    """Where the model is and how many problems to run."""

    url: str = field(
        default="http://127.0.0.1:8081/v1", metadata={"help": "OpenAI-compatible base URL"}
    )
    model: str = field(default="smollm2-135m", metadata={"help": "model name at that backend"})
    api_key: str = field(default="", metadata={"help": "bearer token, if the backend needs one"})
    checkpoint: str = field(default="", metadata={"help": "TAB checkpoint (default: shipped)"})
    problems: int = field(default=8, metadata={"help": "problems per method"})
    budget_multiple: float = field(
        default=2.0, metadata={"help": "B = multiple * median length * turns"}
    )
    seed: int = field(default=0, metadata={"help": "which test problems"})
    methods: str = field(default="static,tab", metadata={"help": "comma-separated allocators"})
    shared_data: str = field(
        default="", metadata={"help": "folder with mmlu_pro raw outputs (gold answers); optional"}
    )
    timeout_s: float = field(default=120.0, metadata={"help": "per-request timeout"})
