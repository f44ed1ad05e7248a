"""A client's evaluation logs straight from the gateway's database, for its SuperNode.

The rows are those posted with the client's API key (``POST /v1/evaluations``), read with the
query embeddings the gateway computed when it stored them, so the client re-encodes nothing.
This reads the gateway's tables by name (``evaluations`` joined to ``api_keys``) instead of
importing ``service`` (components never import the gateway); the columns, the embedding blob
codec and the row -> ``EvalRow`` mapping are ``training.data.gateway_rows``, the module the
gateway itself stores the blobs with.

URLs: ``sqlite:///path.db`` (the gateway's default) or ``postgresql://...`` (read with asyncpg).

Usage::

    m = read_client_matrix("sqlite:////srv/junction/junction.db", "acme")
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from training.data.gateway_rows import EVALUATION_COLUMNS, EVALUATIONS_TABLE, row_to_eval
from training.data.load import matrix_from_rows
from training.data.matrix import EvalMatrix
from training.data.schema import EvalRow

QUERY = (
    "SELECT "
    + ", ".join(f"e.{c}" for c in EVALUATION_COLUMNS)
    + f" FROM {EVALUATIONS_TABLE} e JOIN api_keys k ON e.key_id = k.id WHERE k.name = {{p}}"
    + " ORDER BY e.id"
)


def _sqlite_rows(url: str, client: str) -> list[Any]:
    path = url.split(":///", 1)[1]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(con.execute(QUERY.format(p="?"), (client,)))
    finally:
        con.close()


def _postgres_rows(url: str, client: str) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(QUERY.format(p="$1"), client)]
        finally:
            await conn.close()

    return asyncio.run(run())


def read_client_rows(url: str, client: str) -> list[EvalRow]:
    """Every evaluation row the API key named ``client`` posted, oldest first."""
    if url.startswith("sqlite"):
        raw = _sqlite_rows(url, client)
    elif url.startswith("postgresql"):
        raw = _postgres_rows(url, client)
    else:
        raise ValueError(f"unsupported gateway database URL {url!r} (sqlite or postgresql)")
    return [row_to_eval(r, i, client=client) for i, r in enumerate(raw)]


def read_client_matrix(url: str, client: str) -> EvalMatrix:
    rows = read_client_rows(url, client)
    if not rows:
        raise ValueError(f"the gateway database holds no evaluations of client {client!r}")
    return matrix_from_rows(rows, dataset=f"gateway:{client}")
