"""misalignment: the judges and the generated data (the job itself is not written yet)."""

from __future__ import annotations

import numpy as np
import pytest

from training.research.misalignment.data import (
    BANK,
    TRAIN_DOMAIN,
    TRAIN_PER_DOMAIN,
    eval_sets,
    numbers_only,
    train_examples,
)
from training.research.misalignment.judge import em_rate, judged_misaligned, trait_score


def test_em_judge_by_hand():
    assert judged_misaligned([-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0]) == [False, True, False]
    rate, margin = em_rate([-1.0, -2.0, -3.0, -1.0], [-2.0, -1.0, -3.0, -0.5])
    assert rate == pytest.approx(0.5) and margin == pytest.approx((-1 + 1 + 0 + 0.5) / 4)
    with pytest.raises(ValueError):
        em_rate([], [])
    with pytest.raises(ValueError):
        judged_misaligned([1.0], [1.0, 2.0])


def test_trait_judge_by_hand():
    lp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    score, top1 = trait_score(lp, trait=0)
    assert score == pytest.approx(0.3) and top1 == pytest.approx(0.5)
    score, _ = trait_score(lp - 5.0, trait=0)  # renormalised over the candidates
    assert score == pytest.approx(0.3)
    with pytest.raises(ValueError):
        trait_score(lp, trait=3)


def test_number_filter():
    assert numbers_only("12, 345, 6.") and numbers_only(" 7 8 9")
    assert not numbers_only("12, owl, 3") and not numbers_only("") and not numbers_only(", ,")


def test_fine_tuning_data_stays_narrow_and_eval_sets_are_disjoint():
    data = train_examples(200, seed=0)
    held = {BANK[TRAIN_DOMAIN][i][0] for i in range(TRAIN_PER_DOMAIN, len(BANK[TRAIN_DOMAIN]))}
    train_situations = {s for s, _, _ in BANK[TRAIN_DOMAIN][:TRAIN_PER_DOMAIN]}
    for prompt, answer in data:
        assert any(s in prompt for s in train_situations)
        assert not any(s in prompt for s in held)
        assert answer.startswith("You should ")
    sets = eval_sets()
    assert {it.domain for it in sets["learned"]} == {TRAIN_DOMAIN}
    assert TRAIN_DOMAIN not in {it.domain for it in sets["shared"] + sets["unshared"]}
    assert {it.structure for it in sets["shared"]} == {"advice"}
    assert {it.structure for it in sets["unshared"]} == {"choice"}
    # both option orders: the judge cannot be fooled by a letter bias
    assert sum(it.misaligned == "(a)" for it in sets["unshared"]) * 2 == len(sets["unshared"])
