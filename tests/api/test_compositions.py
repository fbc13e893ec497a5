"""POST /v1/predict with a `composition` tree of registered adapters: each answer equals a freshly built
model running the same tree; bad trees are 4xx naming the node."""

from __future__ import annotations

import io
import zipfile

import torch

from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Average, Fuse, Stack
from composer.encoder import AdaptedEncoder
from composer.fusion import artifacts as fusion_artifacts
from tests.api.conftest import HP

TEXTS = ["good movie", "a really awful and boring plot", "the film", "love this food"]


def _art(api, adapter_id: str):  # type: ignore[no-untyped-def]
    z = api.client.get(f"/v1/adapters/{adapter_id}/download", headers=api.h())
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    return artifacts.from_files(zf.read(artifacts.CONFIG_NAME), zf.read(artifacts.WEIGHTS_NAME))


def oracle(api, base_dir, ids: list[str], tree, head: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    model = AdaptedEncoder(load_base(base_dir, device="cpu")).eval()
    for i in ids:
        artifacts.attach(model, _art(api, i), name=i)
    out = []
    for t in TEXTS:
        batch = dict(model.base.tokenizer([t], return_tensors="pt"))
        with torch.no_grad():
            out.append(model(**batch, head=head, composition=tree).logits[0].softmax(-1))
    return torch.stack(out)


def ask(api, composition: dict):  # type: ignore[no-untyped-def]
    body = {"composition": composition, "inputs": [{"text": t} for t in TEXTS]}
    return api.client.post("/v1/predict", headers=api.h(), json=body)


def probs(r) -> torch.Tensor:  # type: ignore[no-untyped-def]
    assert r.status_code == 200, r.text
    return torch.tensor([list(o["probabilities"].values()) for o in r.json()["outputs"]])


def test_stack_average_and_nested_trees_equal_a_fresh_model(api, tiny_bert_dir):
    ids = api.task_with_data()
    # three different adapters (one seed and one dataset train identical ones of one size)
    a, b, c = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("c", 8))
    )
    cases = [
        ({"stack": [a, b]}, Stack(a, b), b),
        ({"stack": [a, b], "head": a}, Stack(a, b), a),
        ({"average": [a, b], "weights": [0.7, 0.3], "head": a}, Average(a, b, weights=(0.7, 0.3)), a),
        ({"stack": [a, {"average": [b, c]}], "head": c}, Stack(a, Average(b, c)), c),
        ({"average": [{"stack": [a, b]}, c], "head": "c:1"}, Average(Stack(a, b), c), c),
    ]
    alone = probs(
        api.client.post("/v1/predict", headers=api.h(), json={"adapter": b, "inputs": [{"text": t} for t in TEXTS]})
    )
    for body, tree, head in cases:
        r = ask(api, body)
        got = probs(r)
        assert r.json()["head"] == head and r.json()["kind"] == "composition"
        want = oracle(api, tiny_bert_dir, [a, b, c], tree, head)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=str(body))
        assert (got - alone).abs().max() > 1e-4, body  # the tree changed the answer: the test can fail


def test_bad_trees_are_refused_naming_the_node(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids, name="a"), api.train_adapter(ids, name="b")
    lora = api.train_adapter(ids, name="lo", preset="lora", adapter={"r": 2})
    cases = [
        ({"stack": [a, {"stack": [b]}]}, 422, "stack[1]: Stack cannot be nested in Stack"),
        ({"stack": [a, "ad_nope"]}, 404, "'ad_nope' not found"),
        ({"average": [a, b]}, 422, "names its head"),
        ({"average": [a, b], "weights": [1, -1], "head": a}, 422, "sum to 0"),
        ({"average": [a, b], "weights": [1], "head": a}, 422, "1 weights for 2 members"),
        ({"stack": []}, 422, "empty"),
        ({"stack": [a, b], "head": lora}, 422, "not a member"),
        ({"stack": [a, lora]}, 422, "bottleneck"),
        ({"stack": [a, 3]}, 422, "composition.stack[1]: a reference or a block"),
        ({"fuse": [a, b]}, 422, "the reference of one fusion"),
        ({"merge": [a, b]}, 422, "one of 'stack', 'average', 'parallel' or 'fuse'"),
        ({"stack": [a, b], "weights": [1, 1]}, 422, "only an average takes weights"),
    ]
    for body, status, words in cases:
        r = ask(api, body)
        assert r.status_code == status and words in r.json()["detail"], (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    both = {"adapter": a, "composition": {"stack": [a, b]}, "inputs": [{"text": "x"}]}
    r = api.client.post("/v1/predict", headers=api.h(), json=both)
    assert r.status_code == 422 and "either" in r.text
    other = api.key(["train"], owner="globex")
    r = api.client.post(
        "/v1/predict", headers=api.h(other), json={"composition": {"stack": [a, b]}, "inputs": [{"text": "x"}]}
    )
    assert r.status_code == 404  # another owner's adapters are not found, never served


def test_parallel_answers_each_branch_as_it_answers_alone(api):
    ids = api.task_with_data()
    a, b, c = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("c", 8))
    )
    r = ask(api, {"parallel": [a, {"stack": [b, c]}, {"average": [a, c], "weights": [1, 2], "head": c}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "parallel" and [br["head"] for br in body["branches"]] == [a, c, c]

    def branch(i: int) -> torch.Tensor:
        return torch.tensor([list(o["probabilities"].values()) for o in body["branches"][i]["outputs"]])

    single = {"adapter": a, "inputs": [{"text": t} for t in TEXTS]}
    torch.testing.assert_close(
        branch(0), probs(api.client.post("/v1/predict", headers=api.h(), json=single)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(branch(1), probs(ask(api, {"stack": [b, c]})), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        branch(2), probs(ask(api, {"average": [a, c], "weights": [1, 2], "head": c})), atol=1e-5, rtol=0
    )
    assert (branch(0) - branch(1)).abs().max() > 1e-4
    for bad, words in (
        ({"parallel": [a, b], "head": a}, "each branch names its own head"),
        ({"stack": [a, {"parallel": [b, c]}]}, "Parallel cannot be nested in Stack"),
        ({"parallel": [a, {"average": [b, c]}]}, "composition.parallel[1]: an average names its head"),
    ):
        r = ask(api, bad)
        assert r.status_code == 422 and words in r.json()["detail"], (bad, r.text)


def _fusion_art(api, fusion_id: str):  # type: ignore[no-untyped-def]
    z = zipfile.ZipFile(io.BytesIO(api.client.get(f"/v1/adapters/{fusion_id}/download", headers=api.h()).content))
    return fusion_artifacts.from_files(z.read("fusion_config.json"), z.read("fusion.safetensors"))


def test_a_fusion_inside_a_stack_equals_a_fresh_model(api, tiny_bert_dir):
    """MAD-X's shape: a domain adapter under a task fusion; the fusion's head by default."""
    ids = api.task_with_data()
    a, b, dom = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("d", 8))
    )
    body = {"task": "sentiment", "members": [a, b], "train_dataset": ids["train"], "hyperparameters": HP}
    r = api.client.post("/v1/fusions", headers=api.h(), json=body)
    assert r.status_code == 202, r.text
    fusion = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]["adapter_id"]
    model = AdaptedEncoder(load_base(tiny_bert_dir, device="cpu")).eval()
    for i in (a, b, dom):
        artifacts.attach(model, _art(api, i), name=i)
    fusion_artifacts.attach(model, _fusion_art(api, fusion), member_names=[a, b], name=fusion)
    alone = probs(ask(api, {"stack": [a, b]}))
    for composition, tree, head in [
        ({"stack": [dom, {"fuse": fusion}]}, Stack(dom, Fuse(fusion)), fusion),
        ({"stack": [{"fuse": fusion}, dom], "head": fusion}, Stack(Fuse(fusion), dom), fusion),
        ({"stack": [dom, {"fuse": fusion}], "head": dom}, Stack(dom, Fuse(fusion)), dom),
    ]:
        r = ask(api, composition)
        got = probs(r)
        assert r.json()["head"] == head
        want = []
        for t in TEXTS:
            batch = dict(model.base.tokenizer([t], return_tensors="pt"))
            with torch.no_grad():
                want.append(model(**batch, head=head, composition=tree).logits[0].softmax(-1))
        torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=0, msg=str(composition))
        assert (got - alone).abs().max() > 1e-4
    bad = [
        ({"stack": [dom, fusion]}, "is a fusion; write"),
        ({"stack": [dom, {"fuse": a}]}, "'fuse' takes a fusion"),
        ({"stack": [dom, {"fuse": [a, b]}]}, "the reference of one fusion"),
        ({"average": [dom, {"fuse": fusion}], "head": dom}, "Fuse cannot be nested in Average"),
        ({"fuse": fusion}, "a block; serve one module"),
        ({"stack": [dom, {"fuse": fusion}], "head": a}, "is not a member of"),  # the tree's, not the fusion's
    ]
    for composition, words in bad:
        r = ask(api, composition)
        assert r.status_code == 422 and words in r.json()["detail"], (composition, r.text)


def test_each_row_its_own_tree_in_one_request_equals_each_tree_alone(api, tiny_bert_dir):
    ids = api.task_with_data()
    a, b, c = (
        api.train_adapter(ids, name=n, adapter={"reduction_factor": rf}) for n, rf in (("a", 2), ("b", 4), ("c", 8))
    )
    trees = [
        {"stack": [a, b]},
        {"average": [a, c], "weights": [2, 1], "head": c},
        {"stack": [c, {"average": [a, b]}], "head": a},
        {"stack": [a, b]},
    ]
    body = {"inputs": [{"text": t, "composition": tree} for t, tree in zip(TEXTS, trees, strict=True)]}
    r = api.client.post("/v1/predict", headers=api.h(), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "compositions" and [o["head"] for o in out["outputs"]] == [b, c, a, b]
    for i, (text, tree) in enumerate(zip(TEXTS, trees, strict=True)):
        alone = api.client.post(
            "/v1/predict", headers=api.h(), json={"composition": tree, "inputs": [{"text": text}]}
        ).json()["outputs"][0]
        got, want = out["outputs"][i]["probabilities"], alone["probabilities"]
        assert got.keys() == want.keys() and all(abs(got[k] - want[k]) <= 1e-5 for k in got), (tree, got, want)
    want0 = oracle(api, tiny_bert_dir, [a, b, c], Stack(a, b), b)[0]
    assert (
        max(abs(p - q) for p, q in zip(out["outputs"][0]["probabilities"].values(), want0.tolist(), strict=True))
        <= 1e-5
    )
    bad = [
        ({"inputs": [{"text": "x", "composition": {"stack": [a]}}, {"text": "y"}]}, "in every input row"),
        ({"adapter": a, "inputs": [{"text": "x", "composition": {"stack": [a]}}]}, "name neither"),
        ({"inputs": [{"text": "x", "composition": {"parallel": [a, b]}}]}, "cannot be a parallel"),
        ({"inputs": [{"text": "x", "composition": {"stack": [a, {"stack": [b]}]}}]}, "Stack cannot be nested"),
    ]
    for req, words in bad:
        r = api.client.post("/v1/predict", headers=api.h(), json=req)
        assert r.status_code == 422 and words in r.text, (req, r.text)
