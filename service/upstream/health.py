"""Backend health: the retry -> fallback -> cooldown state machine, with active probes.

Per failure kind:

============================ ======= ========= ===================================
failure                      retry?  fallback? cooldown
============================ ======= ========= ===================================
connect, cut, bad body, 5xx  once    yes       after ``after_failures`` in a row
timeout (read)               no      yes       after ``after_failures`` in a row
stream cut / error mid-way   (sent)  (sent)    after ``after_failures`` in a row
429 (rate limited upstream)  no      yes       at once, for Retry-After or cooldown_s
401/402/403/404 (misconfig)  no      yes       at once (a budget-exhausted backend too)
400/413/422 (bad request)    no      routed    after ``after_failures`` requests that
                                     only      another backend then served
============================ ======= ========= ===================================

Every failure is counted, retries and fallbacks included (LiteLLM skipped cooldown on later
attempts because it de-duplicated failure logs). A timeout is not retried on the same backend:
a hung backend would cost two read timeouts. A stream is a success only when it ends cleanly,
so a backend that always cuts streams mid-way reaches its cooldown (opening the stream used to
reset the count). When every candidate is cooling down they are all tried, the one that
recovers first first, rather than failing outright. A probe that succeeds ends a cooldown early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.upstream.client import UpstreamFailure


@dataclass
class _State:
    failures: int = 0
    until: float = 0.0


class BackendHealth:
    def __init__(self, *, cooldown_s: float = 15.0, after_failures: int = 2) -> None:
        self.cooldown_s = cooldown_s
        self.after_failures = after_failures
        self._state: dict[str, _State] = {}

    @staticmethod
    def retryable(failure: UpstreamFailure) -> bool:
        if failure.kind == "timeout":
            return False
        if failure.kind != "status":
            return True
        return failure.status is not None and failure.status >= 500

    def cooling(self, model: str, now: float | None = None) -> bool:
        s = self._state.get(model)
        return s is not None and s.until > (time.monotonic() if now is None else now)

    def cooling_models(self) -> list[str]:
        now = time.monotonic()
        return [m for m, s in self._state.items() if s.until > now]

    def ready_at(self, model: str) -> float:
        s = self._state.get(model)
        return 0.0 if s is None else s.until

    def record_success(self, model: str) -> None:
        s = self._state.get(model)
        if s is not None and (s.failures or s.until):
            s.failures, s.until = 0, 0.0

    def record_failure(self, model: str, failure: UpstreamFailure) -> None:
        if failure.client_error:
            return
        s = self._state.setdefault(model, _State())
        s.failures += 1
        now = time.monotonic()
        if failure.kind == "status" and failure.status == 429:
            s.until = now + (failure.retry_after or self.cooldown_s)
        elif failure.kind == "status" and failure.status in (401, 402, 403, 404):
            s.until = now + self.cooldown_s
        elif s.failures >= self.after_failures:
            s.until = now + self.cooldown_s

    def record_rejection(self, model: str) -> None:
        """The backend refused (4xx) a request that another backend then served: it is the
        backend, not the request, that is broken."""
        s = self._state.setdefault(model, _State())
        s.failures += 1
        if s.failures >= self.after_failures:
            s.until = time.monotonic() + self.cooldown_s

    def order_usable(self, models: list[str]) -> list[str]:
        """Models not cooling down, in the given order; if none, all of them, the soonest to
        recover first."""
        now = time.monotonic()
        ok = [m for m in models if not self.cooling(m, now)]
        if ok or not models:
            return ok
        return sorted(models, key=self.ready_at)
