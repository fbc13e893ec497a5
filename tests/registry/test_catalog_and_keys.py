"""Owners, keys (hashed), base models, tasks and datasets, with their refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry_db.errors import Conflict, InvalidInput, NotFound
from registry_db.models import ApiKey, Dataset
from registry_db.repo import catalog, keys
from tests.registry.helpers import seed


def test_keys_are_stored_hashed_and_revocable(registry):
    with registry.tx() as s:
        owner = keys.create_owner(s, "acme")
        row, secret = keys.create_key(s, owner.id, ["read", "train"])
    with registry.tx() as s:
        stored = s.scalars(select(ApiKey)).one()
        assert secret not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
        assert keys.authenticate(s, secret).id == row.id
        assert keys.authenticate(s, secret + "x") is None
        keys.revoke_key(s, row.id)
    with registry.tx() as s:
        assert keys.authenticate(s, secret) is None
        assert not keys.admin_key_exists(s)


def test_bad_scopes_are_refused(registry):
    with registry.tx() as s:
        owner = keys.create_owner(s, "acme")
        with pytest.raises(InvalidInput, match="scopes"):
            keys.create_key(s, owner.id, ["root"])


def test_task_rules(registry):
    ids = seed(registry)
    with registry.tx() as s, pytest.raises(InvalidInput, match="duplicates"):
        catalog.create_task(s, ids["owner"], "t2", "classification", ["a", "b", "a"])
    with registry.tx() as s, pytest.raises(InvalidInput, match="metric"):
        catalog.create_task(s, ids["owner"], "t3", "classification", ["a", "b"], metric="pearson")
    with pytest.raises(Conflict, match="already exists"), registry.tx() as s:
        catalog.create_task(s, ids["owner"], "sentiment", "classification", ["a", "b"])
    with registry.tx() as s:
        t = catalog.get_task(s, ids["owner"], "sentiment")
        assert t.labels == ["neg", "pos"] and t.metric == "accuracy"


def test_unknown_foreign_keys_are_refused(registry):
    with registry.tx() as s, pytest.raises(NotFound, match="owner"):
        catalog.create_task(s, "own_nope", "t", "classification", ["a", "b"])
    with registry.tx() as s, pytest.raises(NotFound, match="task"):
        catalog.add_dataset(s, "task_nope", "train", "jsonl", "a" * 64, 3, {"a": 3})
    # and the database itself enforces them, should a caller skip the checks
    with pytest.raises(IntegrityError), registry.tx() as s:
        s.add(
            Dataset(
                task_id="task_nope", split="train", format="jsonl", sha256="b" * 64, row_count=1, label_histogram={}
            )
        )
        s.flush()


def test_same_dataset_twice_is_deduplicated(registry):
    ids = seed(registry)
    sha = registry.blobs.put(b'{"text": "good", "label": "pos"}\n')
    with registry.tx() as s:
        a, created_a = catalog.add_dataset(s, ids["task"], "train", "jsonl", sha, 1, {"pos": 1})
    with registry.tx() as s:
        b, created_b = catalog.add_dataset(s, ids["task"], "train", "jsonl", sha, 1, {"pos": 1})
        c, created_c = catalog.add_dataset(s, ids["task"], "validation", "jsonl", sha, 1, {"pos": 1})
    assert (created_a, created_b, created_c) == (True, False, True)
    assert a.id == b.id != c.id
    with registry.tx() as s, pytest.raises(InvalidInput, match="split"):
        catalog.add_dataset(s, ids["task"], "dev", "jsonl", sha, 1, {"pos": 1})


def test_base_model_registration_is_idempotent_by_identity(registry):
    ids = seed(registry)
    with registry.tx() as s:
        again, created = catalog.register_base_model(
            s,
            name="other-name",
            identity="acme".ljust(32, "0")[:32],
            config_hash="c" * 64,
            weights_hash="w" * 64,
            architecture="bert",
            hidden_size=384,
            num_layers=6,
            path="/x",
        )
    assert not created and again.id == ids["base"]
