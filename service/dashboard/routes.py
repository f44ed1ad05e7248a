"""``/dashboard``: the operator's web page, its static files and its JSON (admin token).

The page itself (``GET /dashboard``) is a static shell with no data in it; everything it shows
comes from ``/dashboard/api/*``, which require the admin token as a bearer header, like the
admin API the page also calls to register models and activate routers. The browser keeps the
token in ``sessionStorage`` (gone when the tab closes) and sends it only as that header, never
as a cookie, so another site cannot make the browser use it (no CSRF surface). The page is
served with a strict Content-Security-Policy: scripts only from this origin, no inline script.

Charts use plotly.js, served from the installed ``plotly`` Python package's own copy (no build
step, nothing vendored into this repository).
"""

from __future__ import annotations

import csv
import io
import json
import math
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from service.dashboard.serving import DashboardData, GatewayView, window
from service.deps import SettingsDep, admin_principal
from service.errors import InvalidRequest, NotFound

HERE = Path(__file__).resolve().parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_UPLOAD_ROWS = 5000

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
api = APIRouter(prefix="/api", dependencies=[Depends(admin_principal)])


async def get_data(request: Request) -> DashboardData:
    data = getattr(request.app.state, "dashboard", None)
    if data is None:
        data = request.app.state.dashboard = DashboardData()
    return data


DataDep = Annotated[DashboardData, Depends(get_data)]


async def get_gateway(request: Request) -> GatewayView:
    """The dashboard's figures span most collaborators: it reads the lifespan's ``Components``
    through the narrow ``GatewayView`` protocol (the gateway's API routes take one typed
    dependency each)."""
    return request.app.state.components


ComponentsDep = Annotated[GatewayView, Depends(get_gateway)]
Hours = Annotated[float, Query(gt=0, le=24 * 90, description="the time window, hours back")]


@lru_cache(maxsize=1)
def _page() -> str:
    return (HERE / "templates" / "index.html").read_text(encoding="utf-8")


def plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise NotFound("plotly.min.js is missing from the installed plotly package")
    return path


@router.get("", response_class=HTMLResponse)
async def page(settings: SettingsDep) -> HTMLResponse:
    import plotly

    html = Template(_page()).substitute(
        plotly_version=plotly.__version__,
        lambda_now=f"{settings.default_lambda:g}",
        environment=settings.environment,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/static/plotly.min.js")
async def plotly_file() -> FileResponse:
    return FileResponse(
        plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    media = STATIC.get(name)
    if media is None:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(
        HERE / "static" / name, media_type=media, headers={"Cache-Control": "no-cache"}
    )


@api.get("/overview")
async def overview(c: ComponentsDep, data: DataDep, hours: Hours = 24.0) -> dict[str, Any]:
    """The pool map, traffic over time, health and fallbacks, budgets, routers."""
    return await data.overview(c, window(hours))


@api.get("/savings")
async def savings(c: ComponentsDep, data: DataDep, hours: Hours = 24.0) -> dict[str, Any]:
    """Cost per 1,000 routed requests against the best single model, overall and per API key."""
    return await data.savings(c, window(hours))


@api.get("/frontier")
async def frontier(
    c: ComponentsDep,
    data: DataDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
) -> dict[str, Any]:
    """The accuracy-cost frontier of a router (default: the default router) over lambda."""
    return await data.frontier(c, router_name)


@api.get("/federation")
async def federation(c: ComponentsDep, data: DataDep) -> dict[str, Any]:
    return data.federation(c)


@api.post("/evaluations/parse")
async def parse_evaluations(
    request: Request,
    filename: Annotated[str, Query(min_length=1, max_length=300)],
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """An uploaded evaluation file (JSONL or CSV) as ``POST /admin/models`` evaluations.

    Rows need ``score`` (0..1) and ``query`` (or ``embedding``); rows of a log that evaluates
    several models (a ``model`` column) are kept only for ``model``.
    """
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the evaluation file is not UTF-8 text", param="file") from None
    return parse_evaluation_file(text, filename=filename, model=model)


def _rows(text: str, filename: str) -> list[tuple[int, dict[str, Any]]]:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix in ("jsonl", "ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise InvalidRequest(
                    f"{filename}:{n}: invalid JSON ({exc})", param="file"
                ) from None
            if not isinstance(obj, dict):
                raise InvalidRequest(
                    f"{filename}:{n}: each line must be a JSON object", param="file"
                )
            out.append((n, obj))
        return out
    if suffix == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [
            (n, {k: v for k, v in row.items() if v not in ("", None)})
            for n, row in enumerate(reader, start=2)
        ]
    raise InvalidRequest(f"{filename}: use a .jsonl or .csv evaluation file", param="file")


def parse_evaluation_file(text: str, *, filename: str, model: str | None) -> dict[str, Any]:
    rows = _rows(text, filename)
    models = {str(r["model"]) for _, r in rows if r.get("model") not in (None, "")}
    skipped = 0
    evals: list[dict[str, Any]] = []
    for n, r in rows:
        if models and len(models) > 1 and str(r.get("model")) != model:
            skipped += 1
            continue
        try:
            score = float(r["score"])
        except (KeyError, TypeError, ValueError):
            raise InvalidRequest(
                f"{filename}:{n}: 'score' must be a number in [0, 1]", param="file"
            ) from None
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise InvalidRequest(
                f"{filename}:{n}: 'score' must be a number in [0, 1]", param="file"
            )
        e: dict[str, Any] = {"score": score}
        if r.get("query") not in (None, ""):
            e["query"] = str(r["query"])
        elif r.get("embedding") not in (None, ""):
            emb = r["embedding"]
            try:
                e["embedding"] = [
                    float(v) for v in (json.loads(emb) if isinstance(emb, str) else emb)
                ]
            except (TypeError, ValueError):
                raise InvalidRequest(
                    f"{filename}:{n}: 'embedding' must be a list of numbers", param="file"
                ) from None
        else:
            raise InvalidRequest(
                f"{filename}:{n}: a row needs 'query' text (or an 'embedding')", param="file"
            )
        for k in ("prompt_tokens", "completion_tokens"):
            if r.get(k) not in (None, ""):
                try:
                    e[k] = int(float(r[k]))
                except (TypeError, ValueError):
                    raise InvalidRequest(
                        f"{filename}:{n}: {k!r} must be an integer", param="file"
                    ) from None
        for k in ("query_id", "category"):
            if r.get(k) not in (None, ""):
                e[k] = str(r[k])
        evals.append(e)
        if len(evals) > MAX_UPLOAD_ROWS:
            raise InvalidRequest(
                f"{filename}: more than {MAX_UPLOAD_ROWS} evaluations", param="file"
            )
    if not evals:
        which = f" for model {model!r}" if models and len(models) > 1 else ""
        raise InvalidRequest(f"{filename}: no evaluations{which}", param="file")
    return {
        "evaluations": evals,
        "rows": len(rows),
        "skipped_other_models": skipped,
        "models_in_file": sorted(models),
    }


router.include_router(api)
