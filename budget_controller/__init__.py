"""TAB: turn-adaptive token budgets for multi-turn conversations.

The inference API the gateway imports is ``BudgetController`` (a trained policy that turns a
conversation's state into this turn's ``max_tokens``). Training, the environments, baselines and
evaluation live in the submodules and are reached through ``junction budget ...``. The names
below load on first use, so ``junction --help`` does not import torch.

Usage::

    from budget_controller import BudgetController
    ctl = BudgetController.load()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from budget_controller.infer import DEFAULT_CHECKPOINT, BudgetController

__all__ = ["DEFAULT_CHECKPOINT", "BudgetController"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("budget_controller.infer"), name)
    raise AttributeError(f"module 'budget_controller' has no attribute {name!r}")
