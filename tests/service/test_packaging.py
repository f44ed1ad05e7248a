"""The install the container image does, `pip install '.[serve,fast]'` (non-editable), then
`junction serve` from another folder, works (issue 13: it stopped at alembic's "Path doesn't
exist: .../site-packages/migrations", and SmolLM2's evaluation file was not packaged).

The wheel is built from a copy of the packaged folders and installed with ``--no-deps`` into
its own folder; the dependencies come from the test's environment. The deployment files are
checked too: the compose file's Flower version is the project's, and the Kubernetes manifests
parse and carry the fields a cluster needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from training.local_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ("service", "training", "budget_controller", "federation", "migrations")
TOKEN = "packaging-test-admin-token-0123"


def _build_and_install(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "runs")
    for name in PACKAGED:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(src)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp / "wheel").glob("junction-*.whl"))
    site = tmp / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    return site


@pytest.mark.slow
def test_a_non_editable_install_serves_from_another_folder(tmp_path: Path) -> None:
    site = _build_and_install(tmp_path)
    assert (site / "service" / "live_models" / "smollm2-135m.jsonl").is_file()
    assert (site / "migrations" / "versions").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of the editable checkout
        "JUNCTION_DATA_DIR": str(tmp_path / "data"),
        "JUNCTION_ADMIN_TOKEN": TOKEN,
        "JUNCTION_ENVIRONMENT": "production",
        "OMP_NUM_THREADS": "1",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import service, migrations; print(service.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().startswith(str(site)), probe.stdout
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--no-smollm2", "--port", str(port)],
        cwd=elsewhere,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        out = (tmp_path / "serve.log").read_text()
        assert ready is not None and ready.status_code == 200, out[-3000:]
        assert "Path doesn't exist" not in out
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()["data"]
        assert len(models) >= 19  # junction/auto and the shipped default pool
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_compose_runs_the_projects_flower_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = [d for group in project["project"]["optional-dependencies"].values() for d in group]
    flwr = next(d for d in deps if re.match(r"flwr\b", d))
    version = re.search(r"(\d+\.\d+(?:\.\d+)?)", flwr)
    assert version is not None, flwr
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    images = [s.get("image", "") for s in compose["services"].values()]
    flower = [i for i in images if "flwr" in i or "flower" in i]
    assert flower, images
    major_minor = ".".join(version.group(1).split(".")[:2])
    for image in flower:
        tag = image.rsplit(":", 1)[-1]
        assert tag.startswith(major_minor), (image, flwr)


def test_kubernetes_manifests_parse_and_are_complete() -> None:
    docs = [
        d
        for f in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    assert docs
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
        assert d["metadata"].get("name"), d
        if d["kind"] in ("Deployment", "StatefulSet"):
            spec = d["spec"]
            labels = spec["selector"]["matchLabels"]
            tmpl = spec["template"]
            assert labels.items() <= tmpl["metadata"]["labels"].items()
            for c in tmpl["spec"]["containers"]:
                assert c.get("name") and c.get("image"), c
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe in c:
                        path = c[probe].get("httpGet", {}).get("path")
                        assert path in (None, "/health/readiness", "/health/liveness", "/health")
        if d["kind"] == "Service":
            assert d["spec"]["ports"] and d["spec"].get("selector"), d
