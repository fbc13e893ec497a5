"""Adapter versions, lineage, sets, aliases (with history), resolution and owner isolation."""

from __future__ import annotations

import pytest

from registry_db.errors import InvalidInput, NotFound
from registry_db.repo import adapters
from tests.registry.helpers import add_adapter, seed


def test_versions_count_up_per_name(registry):
    ids = seed(registry)
    a1, a2 = add_adapter(registry, ids), add_adapter(registry, ids)
    b1 = add_adapter(registry, ids, name="other")
    with registry.tx() as s:
        assert [adapters.get_adapter(s, i).version for i in (a1, a2, b1)] == [1, 2, 1]


def test_hidden_size_must_match_the_base(registry):
    ids = seed(registry)
    with pytest.raises(InvalidInput, match="hidden size 768"):
        add_adapter(registry, ids, hidden_size=768)


def test_unknown_task_or_base_is_refused(registry):
    ids = seed(registry)
    with pytest.raises(NotFound, match="task"):
        add_adapter(registry, {**ids, "task": "task_nope"})
    with pytest.raises(NotFound, match="base model"):
        add_adapter(registry, {**ids, "base": "bm_nope"})


def test_private_adapters_of_another_owner_are_invisible(registry):
    mine, theirs = seed(registry, "acme"), seed(registry, "globex")
    private = add_adapter(registry, theirs)
    public = add_adapter(registry, theirs, name="shared", visibility="public")
    own = add_adapter(registry, mine)
    with registry.tx() as s:
        with pytest.raises(NotFound):
            adapters.get_adapter(s, private, mine["owner"])
        assert adapters.get_adapter(s, public, mine["owner"]).id == public
        listed = {a.id for a in adapters.list_adapters(s, mine["owner"]).items}
    assert listed == {own, public}


def test_fusion_lineage_keeps_order(registry):
    ids = seed(registry)
    a, b, c = (add_adapter(registry, ids, name=n) for n in ("a", "b", "c"))
    fusion = add_adapter(registry, ids, name="fuse", kind="fusion")
    with registry.tx() as s:
        adapters.add_fusion_members(s, fusion, [c, a, b])
    with registry.tx() as s:
        assert [m.id for m in adapters.fusion_members(s, fusion)] == [c, a, b]
        with pytest.raises(InvalidInput, match="once"):
            adapters.add_fusion_members(s, fusion, [a, a])


def test_mt_a_set_and_prompt_ensemble_are_ordered_sets(registry):
    ids = seed(registry)
    members = [add_adapter(registry, ids, name=f"p{i}", kind="soft_prompt") for i in range(3)]
    with registry.tx() as s:
        ens = adapters.create_set(
            s,
            owner_id=ids["owner"],
            kind="ensemble",
            name="sent-ens",
            adapter_ids=members[::-1],
            task_id=ids["task"],
            voting="majority",
        )
    with registry.tx() as s:
        assert [m.id for m in adapters.set_members(s, ens.id)] == members[::-1]
        assert [x.id for x in adapters.sets_of(s, members[0])] == [ens.id]


def test_aliases_move_keep_history_and_resolve(registry):
    ids = seed(registry)
    v1, v2 = add_adapter(registry, ids), add_adapter(registry, ids)
    with registry.tx() as s:
        adapters.set_alias(s, ids["owner"], ids["task"], "production", v1)
    with registry.tx() as s:
        alias = adapters.set_alias(s, ids["owner"], ids["task"], "production", v2)
    with registry.tx() as s:
        assert [h.adapter_id for h in adapters.alias_history(s, alias.id)] == [v1, v2]
        assert adapters.resolve_adapter(s, ids["owner"], "sentiment@production").id == v2
        assert adapters.resolve_adapter(s, ids["owner"], "sentiment:1").id == v1
        assert adapters.resolve_adapter(s, ids["owner"], v1).id == v1
        with pytest.raises(NotFound):
            adapters.resolve_adapter(s, ids["owner"], "sentiment@staging")
        with pytest.raises(NotFound):
            adapters.resolve_adapter(s, ids["owner"], "sentiment:9")
        with pytest.raises(InvalidInput):
            adapters.set_alias(s, ids["owner"], ids["task"], "Bad Alias!", v1)


def test_archive(registry):
    ids = seed(registry)
    a = add_adapter(registry, ids)
    with registry.tx() as s:
        adapters.archive_adapter(s, a, ids["owner"])
    with registry.tx() as s:
        assert adapters.get_adapter(s, a).status == "archived"
        assert adapters.list_adapters(s, ids["owner"], status="ready").items == []


def test_the_reference_epoch_moves_with_every_write_that_changes_a_resolution_and_only_then(registry):
    """Registrations, archives and alias moves each move it once, committed or not at all; reads leave it."""
    ids = seed(registry)

    def epoch() -> int:
        with registry.tx() as s:
            return adapters.reference_epoch(s)

    start = epoch()
    a = add_adapter(registry, ids)
    assert epoch() == start + 1
    with registry.tx() as s:
        adapters.set_alias(s, ids["owner"], ids["task"], "production", a)
    assert epoch() == start + 2
    with registry.tx() as s:
        adapters.resolve_adapter(s, ids["owner"], "sentiment@production")
        adapters.list_adapters(s, ids["owner"])
    assert epoch() == start + 2
    with pytest.raises(RuntimeError), registry.tx() as s:
        adapters.archive_adapter(s, a, ids["owner"])
        raise RuntimeError("rolled back")
    assert epoch() == start + 2
    with registry.tx() as s:
        adapters.archive_adapter(s, a, ids["owner"])
    assert epoch() == start + 3
