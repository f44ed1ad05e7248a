"""Flower's Deployment Engine on loopback (a SuperLink and 2 SuperNodes as separate processes,
each SuperNode reading only its own private log), then publishing the router to a real gateway
through the admin API and routing a request with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from federation.config import FederationConfig
from federation.deploy import DeploymentError, run_local_deployment
from federation.partition import global_test, partition, to_rows
from federation.publish import PublishError, publish
from federation.routers import router_auc
from service.cli.fake_vllm import FakeVLLM
from tests.service.helpers import ADMIN, ADMIN_TOKEN, make_settings, run_gateway
from training.data.load import load_matrix
from training.data.schema import write_log
from training.routers.base import load_router


def flower_processes() -> set[int]:
    """Live processes of Flower's runtime (SuperLink, SuperNodes, their app processes)."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(x in cmd for x in (b"flower-superlink", b"flower-supernode", b"flwr-")):
            out.add(int(pid))
    return out


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("deploy")
    m = load_matrix("routerbench").subset(np.arange(900))
    parts = partition(m, clients=2, seed=0)
    paths = []
    for p in parts:  # each organisation's private log, with its query embeddings
        paths.append(
            write_log(to_rows(p.train, client_id=f"org{p.client}"), tmp / f"org{p.client}.jsonl")
        )
    # No `models`: the deployment helper takes the models the logs evaluate.
    cfg = FederationConfig(router="mlp", rounds=2, participation=1.0, hidden=32)
    before = flower_processes()
    path = run_local_deployment(cfg, paths, tmp / "out", timeout=420)
    return {"path": path, "parts": parts, "models": m.models, "before": before, "tmp": tmp}


def test_deployment_engine_trains_from_private_logs(deployed) -> None:
    router = load_router(deployed["path"])
    assert router.models == deployed["models"]
    history = json.loads((deployed["path"].parent / "history.json").read_text())
    assert history["clients"] == [0, 1]
    assert [a["clients"] for a in history["aggregation"]["train"]] == [[0, 1], [0, 1]]
    assert router_auc(router, global_test(deployed["parts"])) > 0.6
    # no server validation set in a deployment: the last round is kept, and the history says why
    assert (
        history["selected_round"]["rule"] == "last"
        and "server-eval" in history["selected_round"]["why"]
    )
    logs = deployed["path"].parent / "logs"
    assert {"superlink.log", "supernode-0.log", "supernode-1.log", "flwr-run.log"} <= {
        p.name for p in logs.iterdir()
    }


def test_deployment_leaves_no_process_behind(deployed) -> None:
    assert flower_processes() - deployed["before"] == set()


def test_deployment_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such evaluation log"):
        run_local_deployment(FederationConfig(), [tmp_path / "missing.jsonl"], tmp_path)
    assert issubclass(DeploymentError, RuntimeError)
    log = tmp_path / "log.jsonl"
    log.write_text("")
    with pytest.raises(ValueError, match="simulate-only"):
        run_local_deployment(FederationConfig(lrs="0.001,0.0003"), [log], tmp_path)


def test_publish_to_the_gateway_and_route_with_it(deployed, tmp_path: Path) -> None:
    router = load_router(deployed["path"])
    backend = FakeVLLM(model="backend-a")
    backend.start_in_thread()
    with run_gateway(make_settings(tmp_path)) as gw:
        for name in router.models:
            assert gw.register(name, backend.url, backend_model="backend-a").status_code == 201
        row = publish(deployed["path"], gateway=gw.url, name="fed-mlp", token=ADMIN_TOKEN)
        assert row["name"] == "fed-mlp" and row["version"] == 1 and row["active"]
        assert row["kind"] == "mlp"
        r = gw.client.post(
            "/v1/route", headers=ADMIN, json={"prompt": "What is 7 * 6?", "router": "fed-mlp"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["router"] == "fed-mlp" and body["model"] in router.models
        assert {c["model"] for c in body["candidates"]} == set(router.models)
        again = publish(deployed["path"], gateway=gw.url, name="fed-mlp", token=ADMIN_TOKEN)
        assert again["version"] == 2
        listed = gw.admin("GET", "/admin/routers").json()["data"]
        assert [(x["version"], x["active"]) for x in listed] == [(1, False), (2, True)]
        with pytest.raises(PublishError, match="HTTP 401"):
            publish(deployed["path"], gateway=gw.url, name="fed-mlp", token="wrong")
    backend.stop()
