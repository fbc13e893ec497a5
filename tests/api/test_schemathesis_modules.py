"""The fuzzer against real modules: two owners, each holding imported modules of every importable kind
(an AdapterHub ST-A and LoRA with heads, an AdapterHub fusion with its members, a PEFT prompt-tuning
classifier), imported through POST /v1/adapters/import. Every operation is fuzzed with each owner's key,
its adapter ids cycled over the caller's own modules and the other owner's, so generated inputs reach
the predict, download, export and ensemble paths of modules that really serve. Nothing is a 500, every
error is problem+json, and no 2xx answer names the other owner's modules."""

from __future__ import annotations

import itertools
import shutil

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from api.archives import make_zip
from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import keys
from service.catalog import register_base_model
from service.settings import Settings
from tests.conftest import FIXTURES, write_tokenizer

PARITY = FIXTURES / "parity"
KEYS = {"a": "owner-a-fuzz-modules-0123456789", "b": "owner-b-fuzz-modules-0123456789"}
MODULES = {  # kind -> (fixture folder, base, task labels)
    "st_a": ("adapters/with_head", "base", ["LABEL_0", "LABEL_1", "LABEL_2"]),
    "lora": ("lora/adapterhub", "base", ["LABEL_0", "LABEL_1", "LABEL_2"]),
    "fusion": ("fusions/with_head", "base", ["neg", "neu", "pos"]),
    "soft_prompt": ("prompts/peft", "peft_base", ["no", "yes"]),
}


def _files(rel: str) -> dict[str, bytes]:
    root = PARITY / rel
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def owners(tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fuzz-modules")
    url = f"sqlite:///{tmp / 'registry.db'}"
    upgrade(url)
    reg = Registry(make_engine(url), LocalBlobStore(tmp / "blobs"))
    bases = {}
    for name, rel in (("base", "base"), ("peft_base", "prompts/peft_base")):
        shutil.copytree(PARITY / rel, tmp / name)
        write_tokenizer(tmp / name)
        bases[name] = register_base_model(reg, tmp / name, name=f"parity-{name}")[0].id
    with reg.tx() as s:
        for owner, secret in KEYS.items():
            keys.create_key(s, keys.get_or_create_owner(s, owner).id, ["admin", "train", "read"], secret=secret)
    app = create_app(
        Settings(data_dir=tmp, register_packaged_encoder=False, max_upload_mb=1), registry=reg, send=lambda *_: True
    )
    held: dict[str, dict[str, str]] = {}
    with TestClient(app) as client:
        for owner, secret in KEYS.items():
            h = {"Authorization": f"Bearer {secret}"}
            held[owner] = {}
            for kind, (rel, base, labels) in MODULES.items():
                task = {"name": kind, "kind": "classification", "labels": labels}
                assert client.post("/v1/tasks", headers=h, json=task).status_code == 201
                r = client.post(
                    "/v1/adapters/import",
                    headers=h,
                    data={"task": kind, "base_model": bases[base]},
                    files={"file": ("m.zip", make_zip(_files(rel)))},
                )
                assert r.status_code == 201 and r.json()["kind"] == kind, r.text
                held[owner][kind] = r.json()["id"]
                for m in r.json().get("imported_members", []):
                    held[owner][f"member:{m['name']}"] = m["id"]
            r = client.post(
                "/v1/ensembles",
                headers=h,
                json={"name": "e", "task": "soft_prompt", "prompts": [held[owner]["soft_prompt"]]},
            )
            assert r.status_code == 201, r.text
            held[owner]["ensemble"] = r.json()["id"]
        yield client, held


ID_FIELDS = ("ref", "adapter", "ensemble_id")


def fuzz(op, caller: str, pool, ensembles, theirs: set[str], served: set[str]) -> None:  # type: ignore[no-untyped-def]
    """One operation with `caller`'s key, its adapter ids drawn in turn from `pool`."""
    turn = itertools.count()

    n = 16 if op.path == "/v1/predict" else 6  # enough predicts that some reach a module that serves

    @given(case=op.as_strategy())
    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):  # type: ignore[no-untyped-def]
        for name in list(case.path_parameters or {}):
            if name in ID_FIELDS:
                case.path_parameters[name] = next(ensembles if name == "ensemble_id" else pool)
        if isinstance(case.body, dict) and case.path == "/v1/predict":
            # a predict names one target: in turn an adapter, or a stack of two, both drawn from the pool
            one, two = next(pool), next(pool)
            if next(turn) % 2:
                case.body.pop("composition", None)
                case.body["adapter"] = one
            else:
                case.body.pop("adapter", None)
                case.body["composition"] = {"stack": [one, two]}
        elif isinstance(case.body, dict) and "adapter" in case.body:
            case.body["adapter"] = next(pool)
        response = case.call(headers={"Authorization": f"Bearer {KEYS[caller]}"})
        raw = response.content
        where = (
            f"{caller}: {case.method} {case.formatted_path} {case.body!r:.200} -> {response.status_code}: {raw[:300]!r}"  # noqa: E501
        )
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.headers["content-type"][0].startswith("application/problem+json"), where
        else:
            assert not any(t.encode() in raw for t in theirs), where
            if case.path == "/v1/predict" and "adapter" in case.body:
                served.add(case.body["adapter"])

    check()


def test_fuzzing_reaches_real_modules_of_both_owners_and_nothing_is_a_500(owners):  # type: ignore[no-untyped-def]
    client, held = owners
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    served: dict[str, set[str]] = {"a": set(), "b": set()}  # the caller's own modules a fuzzed predict was served by
    for caller, other in (("a", "b"), ("b", "a")):
        mine = [v for k, v in held[caller].items() if k != "ensemble"]
        theirs = set(held[other].values())
        pool = itertools.cycle([*mine, *sorted(theirs)[:2]])
        ensembles = itertools.cycle([held[caller]["ensemble"], held[other]["ensemble"]])
        for op in [r.ok() for r in schema.get_all_operations()]:
            fuzz(op, caller, pool, ensembles, theirs, served[caller])
    for caller in ("a", "b"):  # the fuzzer's predicts did reach real modules that serve
        assert served[caller], f"no fuzzed predict of owner {caller} was served"
