"""Multi-turn problems built from MMLU-Pro's recorded responses: the data behind the environment.

Construction (and its limits):

- **Solver behaviour is recorded, not simulated.** For every (question, model) pair MMLU-Pro's
  published outputs give the model's full chain-of-thought response; ``training/data`` counted its
  tokens with the SmolLM2 tokenizer and scored it (0/1). A sub-question's *needed length* under a
  solver is that recorded completion length; its outcome is that recorded score.
- **A budget is a ``max_tokens`` cap.** Under budget ``b`` the solver generates
  ``min(b, needed)`` tokens; when ``needed > b`` the answer is cut off before it is given (the
  recorded responses put the answer at the end) and the turn fails. This is exactly what a real
  ``max_tokens`` does to a model that does not follow length instructions. The solver does *not*
  shorten its reasoning to fit a budget (the paper's L1 solver does); that is the main difference.
- **Problems chain sub-questions.** A problem is 2-4 distinct MMLU-Pro questions of one category
  (a topic), asked in turn; it is solved only if every turn finishes and is correct (later turns
  depend on earlier ones: a failed turn dooms the problem). The dependency is imposed by this
  rule: the questions themselves are independent, so the history does not change a later turn's
  length or correctness as a real decomposition would.
- **The solver is drawn per episode** from a pool of models, unseen by the policy, so the policy
  must plan for a distribution of lengths, as a gateway routing across models does.
- **Splits** follow the data set's query split: policies train on ``train`` questions, select on
  ``val`` and are reported on ``test``.

Usage::

    data = SolverData.load(EnvConfig())
    problems = data.sample_problems("train", 256, rng)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from budget_controller.config import EnvConfig

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Problems:
    """A batch of multi-turn problems (padded to ``max_turns``)."""

    questions: IntArray  # [N, T] row indices into SolverData, -1 = no turn
    num_turns: IntArray  # [N]
    budget: FloatArray  # [N] global token budget B
    solver: IntArray  # [N] which solver answers this episode

    def __len__(self) -> int:
        return len(self.num_turns)

    def repeat(self, g: int) -> Problems:
        """Each problem ``g`` times in a row (a GRPO group)."""
        return Problems(
            questions=np.repeat(self.questions, g, axis=0),
            num_turns=np.repeat(self.num_turns, g),
            budget=np.repeat(self.budget, g),
            solver=np.repeat(self.solver, g),
        )


@dataclass(frozen=True)
class SolverData:
    """Per question: its embedding, split, category; per (question, solver): length and score."""

    embeddings: FloatArray  # [Q, D]
    split: npt.NDArray[np.str_]  # [Q]
    category: npt.NDArray[np.str_]  # [Q]
    queries: list[str]
    query_ids: npt.NDArray[np.str_]
    solvers: list[str]
    lengths: FloatArray  # [Q, S] recorded completion tokens
    correct: FloatArray  # [Q, S] recorded score (0/1)
    cfg: EnvConfig

    @classmethod
    def load(cls, cfg: EnvConfig) -> SolverData:
        from training.data.load import load_matrix

        m = load_matrix(cfg.dataset).select_models(cfg.solver_list)
        # Keep questions every solver answered (a recorded length and score for each).
        keep = ~np.isnan(m.scores).any(axis=1) & ~np.isnan(m.completion_tokens).any(axis=1)
        m = m.subset(np.asarray(keep, dtype=bool))
        return cls(
            embeddings=m.embeddings.astype(np.float32),
            split=m.split,
            category=m.categories,
            queries=m.queries,
            query_ids=m.query_ids,
            solvers=list(m.models),
            lengths=np.maximum(m.completion_tokens, 1.0).astype(np.float32),
            correct=m.scores.astype(np.float32),
            cfg=cfg,
        )

    @property
    def median_length(self) -> float:
        """The solver pool's median completion length on training questions: the budget unit."""
        return float(np.median(self.lengths[self.split == "train"]))

    def budget_grid(self, mean_turns: float) -> list[float]:
        """Global budgets B for evaluation: multiples of (mean turns * median length)."""
        unit = self.median_length * mean_turns
        return [round(unit * k) for k in self.cfg.multiples]

    def sample_problems(
        self,
        split: str,
        n: int,
        rng: np.random.Generator,
        *,
        budgets: list[float] | None = None,
        per_turn: tuple[float, float] | None = None,
    ) -> Problems:
        """``n`` problems of one category each; B from ``budgets`` or ``per_turn`` (range x turns)."""
        cfg = self.cfg
        idx = np.flatnonzero(self.split == split)
        cats = self.category[idx]
        by_cat = {c: idx[cats == c] for c in np.unique(cats)}
        names = [c for c, rows in by_cat.items() if len(rows) >= cfg.max_turns]
        weights = np.array([len(by_cat[c]) for c in names], dtype=np.float64)
        weights /= weights.sum()
        qs = np.full((n, cfg.max_turns), -1, dtype=np.int64)
        turns = rng.integers(cfg.min_turns, cfg.max_turns + 1, size=n)
        for i in range(n):
            rows = by_cat[names[rng.choice(len(names), p=weights)]]
            qs[i, : turns[i]] = rng.choice(rows, size=turns[i], replace=False)
        if budgets is not None:
            b = rng.choice(np.asarray(budgets, dtype=np.float64), size=n)
        else:
            lo, hi = per_turn or (0.75, 4.0)
            # Log-uniform per-turn budget (in median lengths) times the number of turns.
            b = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n)) * self.median_length * turns
        solver = rng.integers(0, len(self.solvers), size=n)
        return Problems(
            questions=qs,
            num_turns=turns.astype(np.int64),
            budget=np.round(b).astype(np.float32),
            solver=solver.astype(np.int64),
        )
