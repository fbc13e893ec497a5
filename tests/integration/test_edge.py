"""An exception no handler takes becomes a 500 problem with a request id (in the body and the
`X-Request-ID` header), logged once with its traceback, and the client's keep-alive connection stays
usable: over a real uvicorn process, one httpx client, the next request on the same socket succeeds."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from registry_db.migrate import upgrade
from tests.http import DROPPED
from tests.http import client as live_client
from tests.integration.procs import ROOT, free_port, wait_healthy

ADMIN = "edge-admin-key-0123456789abcdef"


@pytest.fixture()
def server(tmp_path):  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(db)
    env = {
        **os.environ,
        "COMPOSER_DATA_DIR": str(tmp_path),
        "COMPOSER_DATABASE_URL": db,
        "COMPOSER_BLOB_URL": f"file://{tmp_path / 'blobs'}",
        "COMPOSER_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "COMPOSER_BOOTSTRAP_KEY": ADMIN,
        "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
    }
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "tests.integration.raising_app:create"]
        proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        wait_healthy(url, 60)
        yield url, log_path
        proc.terminate()
        proc.wait(20)


def _socket(r: httpx.Response) -> tuple[str, int]:
    return r.extensions["network_stream"].get_extra_info("socket").getsockname()


@pytest.mark.parametrize("route", ["__raise__", "__raise_in_thread__", "__raise_sync__"])
def test_an_unhandled_error_is_a_500_problem_and_the_connection_stays_usable(server, route):  # type: ignore[no-untyped-def]
    url, log_path = server
    before = len(DROPPED)
    with live_client(url, ADMIN, limits=httpx.Limits(max_connections=1)) as c:
        first = c.get("/v1/keys")
        assert first.status_code == 200, first.text
        r = c.get(f"/v1/{route}", headers={"X-Request-ID": "trace-me-42"})
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["type"].endswith("/internal") and body["status"] == 500
        assert body["request_id"] == r.headers["x-request-id"] == "trace-me-42"
        nxt = c.get("/v1/keys")  # the same client, the same keep-alive connection
        assert nxt.status_code == 200, nxt.text
        assert _socket(first) == _socket(r) == _socket(nxt)  # never reconnected: the server kept it open
        fresh = c.get(f"/v1/{route}")
        assert fresh.json()["request_id"] == fresh.headers["x-request-id"] != "trace-me-42"  # minted when none
    assert len(DROPPED) == before
    log = log_path.read_text()
    assert log.count("trace-me-42") == 1, log  # logged once, with the request id ...
    assert log.count("Traceback") == 2 and "Exception in ASGI application" not in log, log  # ... and no re-raise


def test_every_response_names_its_request(server):  # type: ignore[no-untyped-def]
    url, _ = server
    with live_client(url, ADMIN) as c:
        ok, missing = c.get("/healthz"), c.get("/v1/adapters/ad_nope")
        assert ok.headers["x-request-id"] and missing.headers["x-request-id"] != ok.headers["x-request-id"]
        assert missing.status_code == 404
        weird = c.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert weird.headers["x-request-id"] != "bad id with spaces"  # not echoed into logs and headers
