"""A warm /v1/predict (its reference resolved by this process within `adapter_cache_seconds`, its module
attached) leases the module on the event loop and reads no table; what changes the answer still applies:
an alias move or an archive through this process at once, through another within that time, and another
owner never sees the cached row."""

from __future__ import annotations

import time
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import event

from api.app import create_app
from service.settings import Settings
from tests.api.conftest import ADMIN

INPUTS = [{"text": "good movie"}, {"text": "a really boring plot"}]


@contextmanager
def statements(engine):  # type: ignore[no-untyped-def]
    """The SQL statements the engine runs inside the block, but the reference-epoch watchers' own periodic
    read (the fixture's API process shares the engine and has one)."""
    seen: list[str] = []

    def record(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if "reference_epoch" not in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def serving(api, tmp_path, seconds: float = 3600):  # type: ignore[no-untyped-def]
    """Another API process on the fixture's registry, looking at the reference epoch every `seconds`. By
    default its watcher does not tick during a test (its reads would land among the statements counted, and
    its first look after a change forgets everything once); changes made through it apply to it at once."""
    settings = Settings(data_dir=tmp_path, register_packaged_encoder=False, adapter_cache_seconds=seconds)
    with TestClient(create_app(settings, registry=api.registry)) as client:
        yield client


def ask(client: TestClient, ref: str, key: str = ADMIN):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/predict", headers={"Authorization": f"Bearer {key}"}, json={"adapter": ref, "inputs": INPUTS}
    )


def test_a_warm_predict_reads_no_table_and_an_alias_move_or_archive_here_applies_at_once(api, tmp_path, monkeypatch):
    from api.routes import predict

    ids = api.task_with_data()
    a, b = api.train_adapter(ids), api.train_adapter(ids, adapter={"reduction_factor": 2})
    h = {"Authorization": f"Bearer {ADMIN}"}
    with serving(api, tmp_path) as client:
        want = {x: ask(client, x).json()["outputs"] for x in (a, b)}
        assert want[a] != want[b]
        r = client.put("/v1/adapters/aliases/sentiment/prod", headers=h, json={"adapter": a})
        assert r.status_code == 200, r.text

        assert ask(client, "sentiment@prod").json()["outputs"] == want[a]  # resolved from the registry
        hits, hops = client.app.state.runtime.stats.hits, []
        resolve = predict.resolve
        monkeypatch.setattr(predict, "resolve", lambda *a: hops.append(a) or resolve(*a))
        with statements(api.registry.engine) as seen:
            warm = ask(client, "sentiment@prod")
        assert hops == []  # leased on the event loop: no thread hop to resolve
        assert warm.status_code == 200 and warm.json() == {"adapter_id": a, "kind": "st_a", "outputs": want[a]}
        assert seen == []  # neither the key nor the adapter row was read
        assert client.app.state.runtime.stats.hits == hits + 1

        r = client.put("/v1/adapters/aliases/sentiment/prod", headers=h, json={"adapter": b})
        assert r.status_code == 200, r.text
        moved = ask(client, "sentiment@prod").json()
        assert (moved["adapter_id"], moved["outputs"]) == (b, want[b])

        assert ask(client, "sentiment@prod").status_code == 200  # warm again, on b
        assert client.post(f"/v1/adapters/{b}/archive", headers=h).status_code == 200
        for ref in ("sentiment@prod", b):
            gone = ask(client, ref)
            assert gone.status_code == 404 and gone.json()["type"].endswith("archived"), gone.text
        assert ask(client, a).json()["outputs"] == want[a]


def test_another_owner_never_gets_a_row_cached_for_the_owner_of_the_adapter(api):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    ask(api.client, a), ask(api.client, a)  # cached and attached for the admin's owner
    stranger = api.key(["read"], owner="someone-else")
    r = ask(api.client, a, stranger)
    assert r.status_code == 404 and r.json()["type"].endswith("not-found"), r.text


def test_an_archive_through_another_process_applies_within_adapter_cache_seconds(api, tmp_path):
    """Another API process on the same registry: warm, it may serve what it had loaded until its next look at
    the reference epoch, at most `adapter_cache_seconds` after the archive (the answer unchanged), then it
    answers 404 and lets the module go; with 0 it answers 404 at once."""
    ids = api.task_with_data()
    a, b = api.train_adapter(ids), api.train_adapter(ids, adapter={"reduction_factor": 2})
    want = {x: ask(api.client, x).json()["outputs"] for x in (a, b)}
    ttl = 0.5
    with serving(api, tmp_path, ttl) as other, serving(api, tmp_path, 0) as uncached:
        for client in (other, uncached):
            for x in (a, b):
                assert ask(client, x).json()["outputs"] == want[x]  # resolved, then warm
                assert ask(client, x).json()["outputs"] == want[x]
        for x in (a, b):
            assert api.client.post(f"/v1/adapters/{x}/archive", headers=api.h()).status_code == 200
        for x in (a, b):
            r = ask(uncached, x)
            assert r.status_code == 404 and r.json()["type"].endswith("archived"), r.text
            r = ask(other, x)
            assert r.status_code == 404 or r.json()["outputs"] == want[x], r.text
        time.sleep(2 * ttl)  # one look at the epoch, with room for a slow machine
        for x in (a, b):
            r = ask(other, x)
            assert r.status_code == 404 and r.json()["type"].endswith("archived"), r.text
        assert {
            m["id"] for m in other.get("/v1/adapters/loaded", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        } & {
            a,
            b,
        } == set()


def test_a_process_that_cannot_read_the_reference_epoch_forgets_every_reference(tmp_path):
    """A registry outage: what this process remembers could be out of date, so it goes (requests then read
    the registry, and fail or recover with it)."""
    import threading

    from api.caches import Recent
    from api.loaders import watch_references
    from registry_db.blobs import LocalBlobStore
    from registry_db.engine import make_engine
    from registry_db.registry import Registry

    gone = Registry(make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"), LocalBlobStore(tmp_path / "b"))
    refs: Recent = Recent(10)
    refs.put(("owner", "ad_1"), object())
    stop = threading.Event()
    watcher = threading.Thread(target=watch_references, args=(refs, gone, 0.05, stop), daemon=True)
    watcher.start()
    deadline = time.monotonic() + 10
    while refs.get(("owner", "ad_1")) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    watcher.join(5)
    assert refs.get(("owner", "ad_1")) is None and not watcher.is_alive()


def test_an_evicted_module_of_a_remembered_reference_reloads_without_reading_the_registry(api, tmp_path):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    with serving(api, tmp_path) as client:
        first = ask(client, a).json()
        rt = client.app.state.runtime
        rt.evict(a, forget=False)  # what the LRU does under a full cache
        with statements(api.registry.engine) as seen:
            again = ask(client, a)
        assert again.json() == first and seen == []  # reattached from the host tier
        assert a in rt.cache
