"""``junction admin onboard-merged``: FlexMerge's merged SmolLM2 variants into the gateway's pool.

The gateway side of FlexMerge (issue 15), end to end, over the gateway's public HTTP API only:

1. variants: read ``VARIANTS/variants.json`` (or build it first from a ``junction research
   flexmerge --llm`` run's adapters, :func:`training.research.flexmerge.variants.build_variants`:
   merged at every size, measured on a query set, exported as GGUF files);
2. serve: one CPU model server (llama-cpp-python, :class:`service.llama_server.LlamaServer`'s
   launcher) per exported variant, its GGUF file and the variant's name as the served model;
3. register: ``POST /admin/models`` per variant with its measured evaluations (query text, 0/1
   exact-match score, prompt and completion tokens) and SmolLM2's price; a variant of the same
   name is deleted and registered again (its evaluations belong to the file just exported);
4. check: every variant answers its own measured queries through its server (the share of
   replies whose score agrees with the measurement is reported); ``POST /v1/route`` over fresh
   questions of every task picks among the variants (``candidates``); a chat completion routed
   by ``junction/auto`` among them is answered by the chosen variant's server.

It writes ``VARIANTS/onboard.json`` and then keeps the servers up until interrupted, or, with
``--exit``, stops them and deletes the variants from the pool again (tests, CI).

Usage::

    junction research flexmerge --llm --no-digits --quick --seeds 1 --out runs/fm
    junction admin onboard-merged --run runs/fm --gateway http://127.0.0.1:8000 \\
        --admin-key "$JUNCTION_ADMIN_TOKEN" --sizes 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.llama_server import LlamaServer
from training.local_servers import free_port

PRICE_PER_MTOK = 0.01  # SmolLM2's own price in the pool (service.app.SMOLLM2_PRICE_PER_MTOK)


class VariantServer(LlamaServer):
    """The gateway's SmolLM2 server launcher, on another GGUF file under another served name."""

    def __init__(self, gguf: Path, alias: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.gguf = gguf
        self.alias = alias

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--model") + 1] = str(self.gguf)
        cmd[cmd.index("--model_alias") + 1] = self.alias
        return cmd


def _check(r: httpx.Response, what: str) -> httpx.Response:
    if r.is_error:
        raise RuntimeError(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
    return r


def register_variant(
    client: httpx.Client, entry: dict[str, Any], url: str, *, price: float
) -> dict[str, Any]:
    """``POST /admin/models`` from the variant's measured evaluations (re-registers a same name)."""
    evals = [
        {
            k: row[k]
            for k in (
                "query",
                "score",
                "query_id",
                "category",
                "prompt_tokens",
                "completion_tokens",
            )
        }  # fmt: skip
        for row in entry["evaluations"]
    ]
    body = {
        "name": entry["name"],
        "backend": {"kind": "openai", "url": url, "model": entry["name"]},
        "pricing": {"input_per_mtok": price, "output_per_mtok": price},
        "evaluations": evals,
    }
    r = client.post("/admin/models", json=body)
    if r.status_code == 409:
        _check(client.delete(f"/admin/models/{entry['name']}"), f"delete {entry['name']}")
        r = client.post("/admin/models", json=body)
    return dict(_check(r, f"register {entry['name']}").json())


def messages(text: str) -> list[dict[str, str]]:
    from training.research.flexmerge.llm import SYSTEM

    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def served_agreement(url: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The variant's own measured queries asked through its model server: the share whose
    exact-match score (and whose first word) agrees with the measurement (transformers, fp32)."""
    from training.research.flexmerge.variants import exact_match, first_word

    same_score = same_word = 0
    served_scores = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for row in entry["evaluations"]:
            r = _check(c.post("/chat/completions", json={
                "model": entry["name"], "messages": messages(row["query"]),
                "max_tokens": 4, "temperature": 0.0,
            }), "model server")  # fmt: skip
            reply = r.json()["choices"][0]["message"]["content"] or ""
            score = float(exact_match(reply, row["answer"]))
            served_scores.append(score)
            same_score += score == row["score"]
            same_word += first_word(reply) == first_word(row["reply"])
    n = len(entry["evaluations"])
    return {"n": n, "score_agreement": same_score / n, "first_word_agreement": same_word / n,
            "served_accuracy": sum(served_scores) / n, "measured_accuracy": entry["accuracy"]}  # fmt: skip


def route_and_chat(client: httpx.Client, names: list[str], checks: Sequence[Any]) -> dict[str, Any]:
    """``/v1/route`` and a routed chat completion for each check question, among ``names``."""
    from training.research.flexmerge.variants import exact_match

    rows = []
    for q in checks:
        route = _check(client.post("/v1/route", json={
            "messages": messages(q.text), "candidates": names, "max_tokens": 4,
        }), "route").json()  # fmt: skip
        free = _check(client.post("/v1/route", json={"messages": messages(q.text)}),
                      "route (whole pool)").json()  # fmt: skip
        raw = _check(client.post("/v1/chat/completions", json={
            "model": "junction/auto", "messages": messages(q.text), "max_tokens": 4,
            "temperature": 0.0, "routing": {"candidates": names},
        }), "chat").json()  # fmt: skip
        reply = raw["choices"][0]["message"]["content"] or ""
        rows.append({
            "task": q.task, "query": q.text, "answer": q.answer,
            "routed": route["model"], "p_correct": route["candidates"][0]["p_correct"],
            "routed_whole_pool": free["model"], "served_by": raw["model"],
            "reply": reply, "correct": exact_match(reply, q.answer),
        })  # fmt: skip
    return {
        "rows": rows,
        "routed_to_a_variant": all(r["routed"] in names for r in rows),
        "served_by_routed_variant": all(r["served_by"] == r["routed"] for r in rows),
        "routed_accuracy": sum(r["correct"] for r in rows) / max(len(rows), 1),
        "variants_chosen": sorted({r["routed"] for r in rows}),
    }


@contextlib.contextmanager
def variant_servers(
    folder: Path, entries: list[dict[str, Any]], *, threads: int = 1
) -> Iterator[dict[str, VariantServer]]:
    servers: dict[str, VariantServer] = {}
    try:
        for e in entries:
            srv = VariantServer(folder / e["gguf"], e["name"], port=free_port(), n_ctx=512,
                                threads=threads)  # fmt: skip
            srv.start(timeout_s=120)
            servers[e["name"]] = srv
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


def onboard(
    folder: Path,
    *,
    gateway: str,
    admin_key: str,
    sizes: Sequence[float] | None = None,
    price: float = PRICE_PER_MTOK,
    checks_per_task: int = 2,
    threads: int = 1,
    keep: Callable[[], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Serve, register and check the exported variants in ``folder`` (its ``variants.json``).

    ``keep``: called while the servers are up and registered (e.g. blocks until interrupted);
    without it the variants are deleted from the pool and the servers stopped at the end."""
    from training.research.flexmerge.variants import VARIANTS_FILE, query_set

    say = say or _silent
    manifest = json.loads((folder / VARIANTS_FILE).read_text())
    entries = [
        e for e in manifest["variants"]
        if "gguf" in e and (sizes is None or any(abs(e["size"] - s) < 1e-9 for s in sizes))
    ]  # fmt: skip
    if not entries:
        raise RuntimeError(f"no exported variant of size {sizes} in {folder / VARIANTS_FILE}")
    names = [e["name"] for e in entries]
    # fresh held-out questions (another seed's draw from the test split) for the routing checks
    checks = query_set(manifest["tasks"], checks_per_task, seed=manifest["seed"] + 1000)
    report: dict[str, Any] = {"gateway": gateway, "variants": {}, "sizes": sizes}
    headers = {"Authorization": f"Bearer {admin_key}"}
    t0 = time.time()
    with (
        httpx.Client(base_url=gateway.rstrip("/"), headers=headers, timeout=180) as client,
        variant_servers(folder, entries, threads=threads) as servers,
    ):
        for e in entries:
            srv = servers[e["name"]]
            pub = register_variant(client, e, srv.url, price=price)
            say(f"registered {e['name']} at {srv.url} from {len(e['evaluations'])} evaluations")
            report["variants"][e["name"]] = {
                "size": e["size"], "tasks": e["tasks"], "server": srv.url,
                "gguf": e["gguf"], "measured_accuracy": e["accuracy"],
                "num_evaluations": pub["num_evaluations"], "routable": pub.get("routable"),
                "served": served_agreement(srv.url, e),
            }  # fmt: skip
            say(f"{e['name']}: served {report['variants'][e['name']]['served']}")
        listed = {m["id"] for m in _check(client.get("/v1/models"), "models").json()["data"]}
        report["listed_in_v1_models"] = all(n in listed for n in names)
        report["routing"] = route_and_chat(client, names, checks)
        say(f"routing: {json.dumps({k: v for k, v in report['routing'].items() if k != 'rows'})}")
        report["seconds"] = time.time() - t0
        (folder / "onboard.json").write_text(json.dumps(report, indent=1) + "\n")
        if keep is not None:
            keep()
        else:
            for n in names:
                _check(client.delete(f"/admin/models/{n}"), f"delete {n}")
    return report


def _silent(msg: str) -> None:  # noqa: ARG001 - a progress sink that drops everything
    return None


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def _wait_for_interrupt() -> None:
    sys.stderr.write("variants served and registered; Ctrl-C stops their model servers\n")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def _run(args: argparse.Namespace) -> int:
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    folder = Path(args.variants) if args.variants else Path(args.run) / "variants"
    say = _silent if args.quiet else _stderr
    if not (folder / "variants.json").exists() or args.rebuild:
        if not args.run:
            sys.stderr.write(f"no {folder}/variants.json: give --run (a flexmerge --llm output)\n")
            return 2
        import torch

        from training.research.flexmerge.variants import build_variants

        torch.set_num_threads(args.threads)
        build_variants(Path(args.run), folder, method=args.method, export_sizes=sizes,
                       eval_per_task=args.eval_per_task, changed_type=args.changed_type,
                       progress=say)  # fmt: skip
    key = args.admin_key or os.environ.get("JUNCTION_ADMIN_TOKEN")
    if not key:
        sys.stderr.write("give --admin-key or set JUNCTION_ADMIN_TOKEN\n")
        return 2
    report = onboard(
        folder, gateway=args.gateway, admin_key=key, sizes=sizes, price=args.price_per_mtok,
        checks_per_task=args.checks, threads=args.threads,
        keep=None if args.exit else _wait_for_interrupt, say=say,
    )  # fmt: skip
    summary = {
        "variants": {n: {"measured_accuracy": v["measured_accuracy"],
                         "served_accuracy": v["served"]["served_accuracy"],
                         "score_agreement": v["served"]["score_agreement"]}
                     for n, v in report["variants"].items()},
        **{k: v for k, v in report["routing"].items() if k != "rows"},
        "report": str(folder / "onboard.json"),
    }  # fmt: skip
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def register(subparsers: Any) -> None:
    adm = subparsers.add_parser("admin", help="tasks that drive a running gateway's admin API")
    sub = adm.add_subparsers(dest="admin_command", required=True, metavar="TASK")
    p = sub.add_parser(
        "onboard-merged",
        help="serve FlexMerge's merged SmolLM2 variants on CPU and register them from their "
        "measured evaluations",
        description=(__doc__ or "").split("Usage::")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gateway", required=True, help="the gateway's base URL (http://host:port)")
    p.add_argument("--admin-key", help="admin token (default: $JUNCTION_ADMIN_TOKEN)")
    p.add_argument("--run", help="a `junction research flexmerge --llm` output (its adapters/)")
    p.add_argument("--variants", help="variants folder (default RUN/variants; built when missing)")
    p.add_argument("--rebuild", action="store_true", help="build the variants again")
    p.add_argument("--method", default="ties", choices=("avg", "ta", "ties"), help="merge operator")
    p.add_argument("--sizes", default="1,2", help="deployed sizes (x) whose variants are onboarded")
    p.add_argument("--eval-per-task", type=int, default=8, help="measured questions per task")
    p.add_argument("--changed-type", default="f32", choices=("f32", "f16", "source"),
                   help="GGUF type of the merged tensors (source: the original quantisation)")  # fmt: skip
    p.add_argument("--price-per-mtok", type=float, default=PRICE_PER_MTOK, help="USD per Mtok")
    p.add_argument("--checks", type=int, default=2, help="routing check questions per task")
    p.add_argument("--threads", type=int, default=1, help="threads per model server and torch")
    p.add_argument("--exit", action="store_true",
                   help="after the checks, delete the variants from the pool and stop the "
                   "servers (default: keep serving until interrupted)")  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_run)
