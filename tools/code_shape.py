"""The shape of the code, measured the same way before and after a refactor (issue 12).

Standard library only (``ast`` and ``re``), so it runs without the virtualenv:

    python tools/code_shape.py            # a Markdown report on stdout
    python tools/code_shape.py --json     # the same figures as JSON

What it reports:

- the largest files (lines) and functions (lines, decorators excluded) in ``service/``;
- import cycles between modules of the four packages (every ``import`` counts: module level,
  inside functions and under ``TYPE_CHECKING``), as strongly connected components, and imports
  that point up the layers (``service`` > ``budget_controller``, ``federation`` > ``training``);
- ``service`` modules the running gateway never imports or starts, outside ``service.cli``
  (tooling in the gateway's package);
- the places each rule of issue 12 is implemented, each a regular expression over the source
  with every hit listed, so a reader can check the count.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training", "federation", "budget_controller")
LAYER = {"service": 2, "budget_controller": 1, "federation": 1, "training": 0}
# Research jobs (issue 15) and tests are not the gateway's rules.
SKIP = ("training/research/", "federation/research_")

# rule -> (path glob the rule is looked for in, [regular expressions, one per implementation])
RULES: dict[str, tuple[str, list[str]]] = {
    # The chat rule: the last user turn plus the tail of the one before when it is short.
    "routing text (last user turn + tail of the previous)": (
        "**/*.py",
        [r"\[-2\]\[-(300|PREVIOUS_TURN_CHARS):\]"],
    ),
    "nearest neighbours in model-embedding space": (
        "**/*.py",
        [r"def neighbours\(Z", r"np\.argsort\(dist", r"np\.linalg\.norm\(Z - z\["],
    ),
    "greedy k-center portfolio": (
        "**/*.py",
        [r"def k_center\(", r"np\.minimum\(d, np\.linalg\.norm"],
    ),
    "checkpoint save (torch.save of a checkpoint dict)": ("**/*.py", [r"torch\.save\("]),
    "checkpoint load (torch.load)": ("**/*.py", [r"torch\.load\("]),
    "evaluation-row mapping (ORM row / API row / EvalRow built field by field)": (
        "**/*.py",
        [r"EvaluationRow\(\s*$", r"EvaluationPublic\(\s*$", r"EvalRow\(\s*$", r"EvalInput\(\s*$"],
    ),
}
# Rules counted per module rather than per function: one module owning a family of conversions
# (or a file format) is the target, however many functions it splits them into.
MODULE_RULES: dict[str, list[str]] = {
    # The gateway's own shapes of an evaluation: wire row -> EvalInput -> ORM row -> public row.
    "modules mapping the gateway's evaluation types (EvalInput / EvaluationRow / "
    "EvaluationPublic built field by field)": [
        r"EvaluationRow\(\s*$",
        r"EvaluationPublic\(\s*$",
        r"EvalInput\(\s*$",
    ],
    # torch.save / torch.load anywhere, and the two payload keys of the old formats.
    "modules saving or loading checkpoints (torch.save / torch.load)": [
        r"torch\.save\(",
        r"torch\.load\(",
    ],
}
# SQL in route handlers: SQLAlchemy statements or sessions inside a ``routes.py``.
SQL_IN_ROUTES = (
    r"(?<![.\w])(select|update|delete|insert)\(|\.session\(\)|\bs\.(get|add|execute|delete)\("
)


def sources() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(SKIP):
                yield rel, path


def module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def largest(n: int = 12) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    files, funcs = [], []
    for rel, path in sources():
        if not rel.startswith("service/"):
            continue
        text = path.read_text()
        files.append((rel, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                funcs.append(
                    (f"{rel}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
                )
    files.sort(key=lambda t: -t[1])
    funcs.sort(key=lambda t: -t[1])
    return files[:n], funcs[:n]


def import_graph() -> dict[str, set[str]]:
    mods = {module_name(rel): path for rel, path in sources()}
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for t in targets:
                r = resolve(t)
                if r is not None and r != mod and not mod.startswith(r + "."):
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for d in sorted(deps):
            a, b = mod.split(".")[0], d.split(".")[0]
            if LAYER[b] > LAYER[a]:
                bad.append(f"{mod} -> {d}")
    return bad


def enclosing(tree: ast.Module) -> dict[int, str]:
    """line -> the innermost function (or class) around it, "<module>" outside any."""
    where: dict[int, str] = {}
    spans = [
        (n.lineno, n.end_lineno or n.lineno, n.name)
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    for start, end, name in sorted(spans, key=lambda t: t[1] - t[0], reverse=True):
        for line in range(start, end + 1):
            where[line] = name
    return where


def rule_hits() -> dict[str, list[str]]:
    """Each rule's implementations: the functions holding a match (one entry per function)."""
    hits: dict[str, list[str]] = {}
    for rule, (_, patterns) in RULES.items():
        found: dict[str, str] = {}
        for rel, path in sources():
            text = path.read_text()
            where = enclosing(ast.parse(text))
            for no, line in enumerate(text.splitlines(), 1):
                code = line.split("#", 1)[0]
                if any(re.search(p, code) for p in patterns):
                    found.setdefault(
                        f"{rel} {where.get(no, '<module>')}", f"{no}: {line.strip()[:80]}"
                    )
        hits[rule] = [f"{k} (line {v})" for k, v in found.items()]
    for rule, patterns in MODULE_RULES.items():
        mods: dict[str, list[str]] = {}
        for rel, path in sources():
            text = path.read_text()
            where = enclosing(ast.parse(text))
            for no, line in enumerate(text.splitlines(), 1):
                if any(re.search(p, line.split("#", 1)[0]) for p in patterns):
                    fn = where.get(no, "<module>")
                    if fn not in mods.setdefault(rel, []):
                        mods[rel].append(fn)
        hits[rule] = [f"{m} ({', '.join(fns)})" for m, fns in mods.items()]
    # The encoder's width as a number in code (docstrings and comments do not count).
    lit = []
    for rel, path in sources():
        with path.open("rb") as fh:
            for tok in tokenize.tokenize(fh.readline):
                if tok.type == tokenize.NUMBER and tok.string == "384":
                    lit.append(f"{rel}:{tok.start[0]}: {tok.line.strip()[:80]}")
    hits["encoder dimension as the number 384 in code (lines)"] = list(dict.fromkeys(lit))
    # The service locator: routes taking collaborators off one ``Components`` object.
    loc = []
    for rel, path in sources():
        if rel.startswith("service/") and path.name in ("routes.py", "deps.py"):
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bc\.\w+|components\b", line.split("#", 1)[0]):
                    loc.append(f"{rel}:{no}: {line.strip()[:80]}")
    hits["Components (service locator) reached from routes and deps"] = loc
    over = [
        f"{p.relative_to(ROOT).as_posix()}:{no}"
        for p in sorted((ROOT / "tests").rglob("*.py"))
        for no, line in enumerate(p.read_text().splitlines(), 1)
        if "dependency_overrides" in line
    ]
    hits["tests using app.dependency_overrides (lines)"] = over
    sql = []
    for rel, path in sources():
        if rel.startswith("service/") and path.name == "routes.py":
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(SQL_IN_ROUTES, line.split("#", 1)[0]):
                    sql.append(f"{rel}:{no}: {line.strip()[:90]}")
    hits["SQL statements / sessions in route handlers (service/**/routes.py)"] = sql
    return hits


def tooling_in_gateway(graph: dict[str, set[str]]) -> list[str]:
    """Modules of ``service`` that the running gateway never reaches, outside ``service.cli``.

    Reached: imported (transitively) from the app factory ``service.app``, or started by a reached
    module as ``-m <module>`` (the SmolLM2 server's entry point). What is left is tooling (CLI,
    benchmarks, test doubles) sitting in the gateway's package.
    """
    launched: dict[str, set[str]] = {m: set() for m in graph}
    for rel, path in sources():
        mod = module_name(rel)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value in graph and node.value != mod:
                    launched[mod].add(node.value)
    seen, todo = set(), ["service.app"]
    while todo:
        m = todo.pop()
        if m in seen or m not in graph:
            continue
        seen.add(m)
        todo += [d for d in graph[m] | launched[m] if d.startswith("service")]
        # a package's __init__ runs before any of its modules
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    # the tooling package (when service/cli is one; a module service/cli.py is itself counted)
    tools = "service.cli." if (ROOT / "service" / "cli").is_dir() else "\0"
    return sorted(
        m
        for m in graph
        if m.startswith("service.") and m not in seen and not (m + ".").startswith(tools)
    )


def report() -> dict[str, object]:
    files, funcs = largest()
    graph = import_graph()
    return {
        "largest_files": files,
        "largest_functions": funcs,
        "import_cycles": cycles(graph),
        "upward_imports": upward(graph),
        "tooling_in_gateway": tooling_in_gateway(graph),
        "rules": rule_hits(),
    }


def markdown(r: dict[str, object]) -> str:
    out = ["## Largest files in service/ (lines)", ""]
    out += [f"- {n} `{f}`" for f, n in r["largest_files"]]  # type: ignore[attr-defined]
    out += ["", "## Largest functions in service/ (lines)", ""]
    out += [f"- {n} `{f}`" for f, n in r["largest_functions"]]  # type: ignore[attr-defined]
    cyc: list[list[str]] = r["import_cycles"]  # type: ignore[assignment]
    out += ["", f"## Import cycles: {len(cyc)} strongly connected components", ""]
    out += [f"- ({len(c)} modules) " + ", ".join(c) for c in cyc]
    up: list[str] = r["upward_imports"]  # type: ignore[assignment]
    out += ["", f"## Imports pointing up the layers: {len(up)}", ""]
    out += [f"- {u}" for u in up]
    tool: list[str] = r["tooling_in_gateway"]  # type: ignore[assignment]
    out += ["", f"## service modules the gateway never runs, outside service.cli: {len(tool)}", ""]
    out += [f"- {t}" for t in tool]
    out += ["", "## Places each rule is implemented", ""]
    for rule, hits in r["rules"].items():  # type: ignore[attr-defined]
        out += [f"### {rule}: {len(hits)}", ""] + [f"- {h}" for h in hits] + [""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    r = report()
    sys.stdout.write((json.dumps(r, indent=1) if p.parse_args().json else markdown(r)) + "\n")


if __name__ == "__main__":
    main()
