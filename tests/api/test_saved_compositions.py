"""Saved compositions: a tree kept as a module of its own (kind `composition`), with an id, versions and
aliases, served by that id exactly as the same tree sent inline (itself checked against a fresh model in
test_compositions.py); nested saved compositions are inlined; bad trees, unknown and archived members and
another owner's modules are refused with nothing registered."""

from __future__ import annotations

import io
import json
import zipfile

import torch

from composer.composition import Average, Stack
from tests.api.conftest import HP
from tests.api.test_compositions import TEXTS, ask, oracle, probs


def predict_id(api, ref: str, key=None):  # type: ignore[no-untyped-def]
    body = {"adapter": ref, "inputs": [{"text": t} for t in TEXTS]}
    return api.client.post("/v1/predict", headers=api.h(key) if key else api.h(), json=body)


def save(api, name: str, composition: dict, key=None):  # type: ignore[no-untyped-def]
    return api.client.post(
        "/v1/compositions", headers=api.h(key) if key else api.h(), json={"name": name, "composition": composition}
    )


def test_a_saved_composition_serves_by_id_version_and_alias_as_its_tree(api, tiny_bert_dir):
    ids = api.task_with_data()
    a, b, c = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("c", 8))
    )
    r = save(api, "dom-task", {"stack": ["a:1", b]})
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert v1["kind"] == "composition" and v1["version"] == 1 and v1["param_count"] == 0
    assert v1["method_config"]["composition"] == {"stack": [a, b]}  # references resolved to ids when saved
    assert v1["method_config"]["heads"] == [b] and v1["method_config"]["members"] == [a, b]
    got = predict_id(api, v1["id"])
    assert got.status_code == 200 and got.json()["adapter"] == v1["id"] and got.json()["head"] == b
    torch.testing.assert_close(probs(got), oracle(api, tiny_bert_dir, [a, b, c], Stack(a, b), b), atol=1e-5, rtol=0)
    # a second version under the same name; the first stays what it was
    v2 = save(api, "dom-task", {"average": ["dom-task:1", c], "weights": [3, 1], "head": c}).json()
    assert v2["version"] == 2 and v2["method_config"]["composition"] == {
        "average": [{"stack": [a, b]}, c],  # a saved composition named in a tree is inlined
        "weights": [3, 1],
        "head": c,
    }
    want2 = oracle(api, tiny_bert_dir, [a, b, c], Average(Stack(a, b), c, weights=(3.0, 1.0)), c)
    torch.testing.assert_close(probs(predict_id(api, "dom-task:2")), want2, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs(predict_id(api, "dom-task:1")), probs(got), atol=1e-6, rtol=0)
    r = api.client.put("/v1/adapters/aliases/sentiment/prod", headers=api.h(), json={"adapter": v2["id"]})
    assert r.status_code == 200, r.text
    torch.testing.assert_close(probs(predict_id(api, "sentiment@prod")), want2, atol=1e-6, rtol=0)
    # and inline: the saved id inside a tree sent with the request
    torch.testing.assert_close(
        probs(ask(api, {"average": [v1["id"], c], "weights": [3, 1], "head": c})), want2, atol=1e-6, rtol=0
    )
    listed = api.client.get("/v1/adapters?kind=composition", headers=api.h()).json()
    assert sorted(x["id"] for x in listed["items"]) == sorted([v1["id"], v2["id"]])
    native = api.client.get(f"/v1/adapters/{v1['id']}/download", headers=api.h())
    assert native.status_code == 200 and native.headers["content-type"] == "application/zip"
    # archiving a member stops the composition, naming the member
    assert api.client.post(f"/v1/adapters/{a}/archive", headers=api.h()).status_code == 200
    r = predict_id(api, v1["id"])
    assert r.status_code == 404 and a in r.json()["detail"]


def test_a_saved_parallel_answers_each_branch(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids, name="a"), api.train_adapter(ids, name="b", adapter={"reduction_factor": 2})
    saved = save(api, "two", {"parallel": [a, {"stack": [a, b]}]}).json()
    body = predict_id(api, saved["id"]).json()
    inline = ask(api, {"parallel": [a, {"stack": [a, b]}]}).json()
    assert body["kind"] == "parallel" and [br["head"] for br in body["branches"]] == [a, b]
    assert body["branches"] == inline["branches"]


def test_bad_saved_compositions_are_refused_and_nothing_is_registered(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids, name="a"), api.train_adapter(ids, name="b")
    stack = save(api, "s", {"stack": [a, b]}).json()
    cases = [
        ({"stack": [a, "nope:1"]}, 404, "'nope:1' not found"),
        ({"stack": [a, "loop:1"]}, 404, "'loop:1' not found"),  # a tree cannot name itself: it does not exist yet
        ({"stack": [a, stack["id"]]}, 422, "Stack cannot be nested in Stack"),  # inlined, then checked
        ({"stack": []}, 422, "empty Stack"),
        ({"average": [a, b], "weights": [1], "head": a}, 422, "1 weights for 2 members"),
        ({"parallel": [a, {"parallel": [b]}]}, 422, "Parallel cannot be nested in Parallel"),
        ({"fuse": a}, 422, "a block; serve one module"),
        ({"stack": [a, b], "head": "ad_none"}, 404, "'ad_none' not found"),
    ]
    for composition, status, words in cases:
        r = save(api, "loop", composition)
        assert r.status_code == status and words in r.json()["detail"], (composition, r.text)
    listed = api.client.get("/v1/adapters?kind=composition", headers=api.h()).json()["items"]
    assert [x["id"] for x in listed] == [stack["id"]]
    # another owner can neither serve the saved composition nor save one over this owner's modules
    other = api.key(["read", "train"], owner="other")
    assert predict_id(api, stack["id"], key=other).status_code == 404
    r = save(api, "theirs", {"stack": [a, b]}, key=other)
    assert r.status_code == 404 and a in r.json()["detail"]


def test_a_saved_composition_downloads_as_an_adapterhub_setup(api):
    """The files are the face's export (held to adapters 1.3.0's answers, a fusion inside a Stack too, in
    tests/composer/test_exports.py)."""
    ids = api.task_with_data()
    a, b, dom = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("d", 8))
    )
    saved = save(api, "madx", {"stack": [dom, {"average": [a, b], "weights": [1, 3]}], "head": a}).json()
    info = api.client.get(f"/v1/adapters/{saved['id']}", headers=api.h()).json()
    assert info["members"] == [dom, a, b]  # its lineage: the modules it runs
    # its members' heads pool the mean of the tokens, which AdapterHub's heads cannot: without heads
    r = api.client.get(f"/v1/adapters/{saved['id']}/download?format=adapterhub", headers=api.h())
    assert r.status_code == 422 and "head pools the mean" in r.json()["detail"]
    r = api.client.get(f"/v1/adapters/{saved['id']}/download?format=adapterhub&with_head=false", headers=api.h())
    assert r.status_code == 200, r.text
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert {f"{m}/adapter_config.json" for m in (dom, a, b)} | {"composition.json"} <= set(z.namelist())
    assert not any("head" in n for n in z.namelist())
    setup = json.loads(z.read("composition.json"))
    # adapters 1.3.0 averages by the mean of weighted outputs: the weights are written times the member count
    average = {"average": [a, b], "weights": [0.5, 1.5], "normalize_weights": False}
    assert setup["setup"] == {"stack": [dom, average]} and setup["active_head"] is None
    # a trained fusion's member priors have no AdapterHub equivalent; a parallel answers differently there
    body = {"task": "sentiment", "members": [a, b], "train_dataset": ids["train"], "hyperparameters": HP}
    job = api.client.post("/v1/fusions", headers=api.h(), json=body).json()
    fusion = api.client.get(f"/v1/jobs/{job['id']}", headers=api.h()).json()["result"]["adapter_id"]
    for tree, words in (({"stack": [dom, {"fuse": fusion}]}, "member priors"), ({"parallel": [a, b]}, "parallel")):
        row = save(api, "other", tree).json()
        r = api.client.get(f"/v1/adapters/{row['id']}/download?format=adapterhub&with_head=false", headers=api.h())
        assert r.status_code == 422 and words in r.json()["detail"], r.text
