"""The federation package's public surface (STYLE.md 15)."""

from __future__ import annotations

import federation


def test_public_surface() -> None:
    assert federation.__all__ == ["MaskedRouter", "PersonalisedRouter", "router_auc"]
    for name in federation.__all__:
        assert getattr(federation, name) is not None
