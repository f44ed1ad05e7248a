"""``/v1/evaluations``: clients post their evaluation logs (idempotent, acknowledged after commit)."""
