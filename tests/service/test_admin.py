"""Admin API: models routable at once, neighbours, portfolio, routers."""

from __future__ import annotations

import io

import torch

from tests.service.helpers import ADMIN, Gateway, assert_error_shape


def chat(gw: Gateway, model: str = "junction/auto", text: str = "hello"):
    return gw.client.post(
        "/v1/chat/completions",
        headers=ADMIN,
        json={"model": model, "messages": [{"role": "user", "content": text}]},
    )


def test_registered_model_is_routable_at_once(gateway: Gateway, fake_a, fake_b) -> None:
    r = gateway.register("model-a", fake_a.url, backend_model="backend-a", scores=(0, 0, 1, 0))
    assert r.status_code == 201
    body = r.json()
    assert (
        body["num_evaluations"] == 4 and body["routable"] is True and body["registry_version"] >= 1
    )
    assert body["embedding"] == [0.25]
    assert chat(gateway).json()["model"] == "model-a"
    r = gateway.register("model-b", fake_b.url, backend_model="backend-b", scores=(1, 1, 1, 0))
    assert r.status_code == 201
    assert (
        chat(gateway).json()["model"] == "model-b"
    )  # the better model, with no restart or retraining


def test_register_with_embeddings_and_duplicate_name(gateway: Gateway, fake_a) -> None:
    evals = [{"embedding": [0.05] * 384, "score": s} for s in (1, 0, 1, 1)]
    body = {
        "name": "emb-model",
        "backend": {"url": fake_a.url, "model": "backend-a"},
        "pricing": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
        "evaluations": evals,
    }
    assert gateway.admin("POST", "/admin/models", json=body).status_code == 201
    assert_error_shape(gateway.admin("POST", "/admin/models", json=body), 409, "conflict")
    bad = {**body, "name": "other", "evaluations": [{"embedding": [0.1] * 10, "score": 1}] * 4}
    err = assert_error_shape(gateway.admin("POST", "/admin/models", json=bad), 422)
    assert "embedding" in err["message"]
    neither = {**body, "name": "other", "evaluations": [{"score": 1}] * 4}
    assert (
        "query"
        in assert_error_shape(gateway.admin("POST", "/admin/models", json=neither), 422)["message"]
    )


def test_get_patch_disable_delete(gateway: Gateway, fake_a) -> None:
    gateway.register("model-a", fake_a.url, backend_model="backend-a")
    assert gateway.admin("GET", "/admin/models/model-a").json()["pricing"]["input_per_mtok"] == 1.0
    r = gateway.admin(
        "PATCH",
        "/admin/models/model-a",
        json={"pricing": {"input_per_mtok": 3, "output_per_mtok": 4}},
    )
    assert r.status_code == 200 and r.json()["pricing"]["output_per_mtok"] == 4
    assert_error_shape(gateway.admin("PATCH", "/admin/models/model-a", json={}), 422)
    gateway.admin("PATCH", "/admin/models/model-a", json={"enabled": False})
    ids = [m["id"] for m in gateway.client.get("/v1/models", headers=ADMIN).json()["data"]]
    assert ids == ["junction/auto"]
    assert_error_shape(chat(gateway, "model-a"), 404, "model_not_found")
    assert_error_shape(chat(gateway), 503, "routing_failed")
    gateway.admin("PATCH", "/admin/models/model-a", json={"enabled": True})
    assert chat(gateway, "model-a").status_code == 200
    assert gateway.admin("DELETE", "/admin/models/model-a").status_code == 204
    assert_error_shape(gateway.admin("GET", "/admin/models/model-a"), 404, "model_not_found")
    assert_error_shape(gateway.admin("DELETE", "/admin/models/model-a"), 404)
    assert_error_shape(chat(gateway, "model-a"), 404, "model_not_found")


def test_neighbors_and_portfolio(gateway: Gateway, fake_a) -> None:
    for name, scores in [
        ("m-low", (0, 0, 0, 1)),
        ("m-mid", (0, 1, 0, 1)),
        ("m-high", (1, 1, 1, 1)),
        ("m-mid2", (1, 0, 1, 0)),
    ]:
        assert (
            gateway.register(name, fake_a.url, backend_model="backend-a", scores=scores).status_code
            == 201
        )
    r = gateway.admin("GET", "/admin/models/m-mid/neighbors", params={"k": 2})
    assert r.status_code == 200
    near = r.json()["neighbors"]
    assert [n["model"] for n in near] == ["m-mid2", "m-low"]
    assert near[0]["distance"] == 0.0
    assert_error_shape(gateway.admin("GET", "/admin/models/nope/neighbors"), 404)
    assert_error_shape(gateway.admin("GET", "/admin/models/m-mid/neighbors", params={"k": 0}), 422)
    p = gateway.admin("POST", "/admin/portfolio", json={"k": 2}).json()
    assert p["models"] == ["m-high", "m-low"]  # best first, then the farthest in LOCUS space
    assert 0 < p["coverage"] <= 1
    assert_error_shape(gateway.admin("POST", "/admin/portfolio", json={"k": 9}), 422)


def test_router_upload_list_and_activation_errors(gateway: Gateway) -> None:
    buf = io.BytesIO()
    torch.save({"kind": "mlp", "config": {}, "state_dict": {}}, buf)
    r = gateway.admin("POST", "/admin/routers", params={"name": "mlp"}, content=buf.getvalue())
    assert r.status_code == 201 and r.json()["version"] == 1 and r.json()["kind"] == "mlp"
    r = gateway.admin("POST", "/admin/routers", params={"name": "mlp"}, content=buf.getvalue())
    assert r.json()["version"] == 2
    listed = gateway.admin("GET", "/admin/routers").json()
    assert [x["version"] for x in listed["data"]] == [1, 2] and listed["builtin"] == ["locus"]
    assert_error_shape(
        gateway.admin(
            "POST", "/admin/routers", params={"name": "bad"}, content=b"not a checkpoint"
        ),
        422,
    )
    assert_error_shape(gateway.admin("POST", "/admin/routers/activate", json={"name": "nope"}), 404)
    assert_error_shape(
        gateway.client.post(
            "/v1/chat/completions",
            headers=ADMIN,
            json={
                "model": "junction/auto",
                "messages": [{"role": "user", "content": "x"}],
                "routing": {"router": "nope"},
            },
        ),
        400,
        "router_not_found",
    )
