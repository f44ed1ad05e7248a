"""Who is calling: the admin token, or a client API key looked up by its SHA-256.

Keys look like ``jk-<43 url-safe chars>`` (256 random bits); the database stores only the hash
and an 8-character prefix for display. Lookups are cached for a few seconds; any key change bumps
the registry version, which clears the cache on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from service.db.engine import Database
from service.db.models import ApiKeyRow
from service.errors import AuthenticationFailed

KEY_PREFIX = "jk-"
_CACHE_TTL_S = 5.0


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller: ``key_id`` None means the admin token."""

    is_admin: bool
    key_id: int | None = None
    name: str = "admin"
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_usd: float | None = None
    spent_usd: float = 0.0
    # May this caller's evaluation rows refresh the shared embeddings (operator's choice)?
    trusted: bool = True

    @property
    def scope(self) -> str:
        return "admin" if self.key_id is None else f"key:{self.key_id}"


ADMIN = Principal(is_admin=True)


def bearer_token(authorization: str | None, api_key_header: str | None = None) -> str | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key_header:
        return api_key_header.strip()
    return None


class Authenticator:
    def __init__(self, db: Database, *, admin_token: str) -> None:
        self.db = db
        self._admin = admin_token.encode()
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def is_admin_token(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._admin)

    def admin(self, token: str | None) -> Principal:
        if token is None:
            raise AuthenticationFailed("missing admin token (Authorization: Bearer ...)")
        if not self.is_admin_token(token):
            raise AuthenticationFailed("invalid admin token")
        return ADMIN

    async def client(self, token: str | None) -> Principal:
        """The admin token or an active client key; 401 otherwise."""
        if token is None:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if self.is_admin_token(token):
            return ADMIN
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await self._lookup(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_TTL_S, principal)
        if principal is None:
            raise AuthenticationFailed("invalid API key")
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        async with self.db.session() as s:
            row = (
                await s.execute(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(
            is_admin=False,
            key_id=row.id,
            name=row.name,
            requests_per_minute=row.requests_per_minute,
            tokens_per_minute=row.tokens_per_minute,
            budget_usd=row.budget_usd,
            spent_usd=row.spent_usd,
            trusted=bool(row.trusted),
        )
