"""Composition trees over registered modules: the JSON grammar, resolving its references, and saving a
tree as a registry module of its own (kind `composition`: an id, versions and aliases like any module).

The grammar (JSON): a registry reference (an id, `name:version` or `task@alias`) is a leaf;
`{"stack": [node, …], "head": ref}` runs its members in order at every site; `{"average": [node, …],
"weights": [w, …], "head": ref}` mixes their outputs; `{"fuse": ref}` runs a registered fusion (inside a
Stack, as adapters 1.3.0 allows); `{"parallel": [node, …]}` (top level only) answers each branch with its
own head. A Stack's head is its last member's unless one is named; an Average names its head. The nesting
rules are adapters 1.3.0's (`composer.composition`), and an invalid tree names the offending node.

A saved composition stores its tree with every reference resolved to an id when it is saved: a version
is immutable, as any module's, and a tree can hold only modules that already exist, so it cannot reach
itself (no cycle can be written). A saved composition named inside another tree is inlined there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from composer import kinds
from composer.composition import Average, Fuse, Parallel, Stack, check_tree, fusions, last_member, leaves
from composer.compositions.kind import CompositionArtifact
from composer.errors import ConfigError
from registry_db.errors import InvalidInput, NotFound
from registry_db.models import Adapter, BaseModelRow
from registry_db.registry import Registry
from registry_db.repo import adapters, catalog
from service import artifact_store
from service.catalog import task_spec

MAX_MEMBERS = 16
MAX_NESTING = 4  # saved compositions inside saved compositions
BLOCKS = ("stack", "average", "parallel", "fuse")


class InvalidComposition(InvalidInput):
    """A tree the grammar or the nesting rules refuse; `where` names the node."""

    def __init__(self, detail: str, where: str = "composition"):
        super().__init__(detail)
        self.where = where


def parse(node: Any, where: str = "composition") -> Any:
    """The JSON tree as composer nodes whose leaves are the references, as written."""
    if isinstance(node, str):
        if not node:
            raise InvalidComposition(f"{where}: an empty reference", where)
        return node
    if not isinstance(node, dict):
        raise InvalidComposition(f"{where}: a reference or a block, got {type(node).__name__}", where)
    blocks = [k for k in BLOCKS if k in node]
    unknown = sorted(set(node) - {*BLOCKS, "weights", "head"})
    if len(blocks) != 1 or unknown:
        detail = (
            f"{where}: one of 'stack', 'average', 'parallel' or 'fuse' (with 'weights', 'head'); got {sorted(node)}"
        )
        raise InvalidComposition(detail, where)
    kind, children = blocks[0], node[blocks[0]]
    if kind == "fuse":  # a registered fusion, by its reference; its members are the fusion's
        if not isinstance(children, str) or not children or len(node) != 1:
            raise InvalidComposition(f"{where}.fuse: the reference of one fusion", where)
        return Fuse(children)
    if not isinstance(children, list):
        raise InvalidComposition(f"{where}.{kind}: a list of members", where)
    if "weights" in node and kind != "average":
        raise InvalidComposition(f"{where}: only an average takes weights", where)
    parsed = [parse(c, f"{where}.{kind}[{i}]") for i, c in enumerate(children)]
    if kind == "stack":
        return Stack(*parsed)
    if kind == "parallel":
        if "head" in node:
            raise InvalidComposition(f"{where}: each branch names its own head", where)
        return Parallel(*parsed)
    weights = node.get("weights")
    if weights is not None and (not isinstance(weights, list) or not all(isinstance(w, int | float) for w in weights)):
        raise InvalidComposition(f"{where}.weights: a list of numbers", where)
    return Average(*parsed, weights=weights)


def _head_of(raw: Any, node: Any, where: str) -> str:
    """A tree's head reference: a leaf is its own; a Stack's is its last member's unless named; an Average
    names it."""
    if isinstance(raw, str):
        return raw
    if raw.get("head") is not None:
        return str(raw["head"])
    if isinstance(node, Average):
        raise InvalidComposition(f"{where}: an average names its head ('head': a member)", where)
    return last_member(node)


def _rewrite(raw: Any, ids: dict[str, str]) -> Any:
    """The JSON tree with each reference (leaf, `fuse`, `head`) replaced by its id."""
    if isinstance(raw, str):
        return ids[raw]
    return {
        k: ids[v] if k in ("fuse", "head") else [_rewrite(c, ids) for c in v] if k in BLOCKS else v
        for k, v in raw.items()
    }


def _inline(s: Any, owner_id: str, raw: Any, depth: int = 0) -> Any:
    """The JSON tree with every saved composition it names replaced by that composition's stored tree (whose
    references are ids already); the nesting rules then hold for the tree as it runs."""
    if isinstance(raw, str):
        try:
            row = adapters.resolve_adapter(s, owner_id, raw)
        except NotFound:
            return raw  # named as not found by `resolve`
        stored = (row.method_config or {}).get("composition") if kinds.get(row.kind).composed else None
        if stored is None:
            return raw
        if depth >= MAX_NESTING:
            raise InvalidComposition(f"composition: saved compositions nest deeper than {MAX_NESTING}")
        return _inline(s, owner_id, stored, depth + 1)
    if isinstance(raw, dict):
        return {
            k: [_inline(s, owner_id, c, depth) for c in v] if k in BLOCKS and isinstance(v, list) else v
            for k, v in raw.items()
        }
    return raw


@dataclass
class Resolved:
    """A tree whose references are resolved, checked and ready to serve."""

    raw: Any  # the JSON tree with ids for references
    tree: Any  # composer nodes over ids
    heads: list[Adapter]  # one per branch (a Parallel), else one
    specs: list[Any]  # each head's task spec
    base_row: BaseModelRow
    leaves: list[Adapter]
    fused: list[tuple[Adapter, list[Adapter]]]  # each fusion with its members, in order


def resolve(s: Any, owner_id: str, raw: Any) -> Resolved:
    """Parse, check and resolve a JSON tree (NotFound for an unknown or unreadable member)."""
    raw = _inline(s, owner_id, raw)
    tree = parse(raw)
    if isinstance(tree, str | Fuse):
        raise InvalidComposition("composition: a block; serve one module with 'adapter'")
    try:
        check_tree(tree)
    except ConfigError as e:
        raise InvalidComposition(str(e)) from None
    refs, fuse_refs = list(dict.fromkeys(leaves(tree))), list(dict.fromkeys(fusions(tree)))
    if isinstance(tree, Parallel):
        branches = zip(raw["parallel"], tree.branches, strict=True)
        head_refs = [_head_of(r, n, f"composition.parallel[{i}]") for i, (r, n) in enumerate(branches)]
    else:
        head_refs = [_head_of(raw, tree, "composition")]
    if len(refs) + len(fuse_refs) > MAX_MEMBERS:
        raise InvalidComposition(f"composition: more than {MAX_MEMBERS} members")
    rows: dict[str, Adapter] = {}
    for ref in dict.fromkeys([*refs, *fuse_refs, *head_refs]):
        try:
            rows[ref] = adapters.resolve_adapter(s, owner_id, ref)
        except NotFound:
            raise NotFound(f"composition: adapter {ref!r} not found") from None
    archived = [r.id for r in rows.values() if r.status == "archived"]
    if archived:
        raise NotFound(f"composition: adapters {archived} are archived")
    for ref in refs:
        role = kinds.get(rows[ref].kind).in_trees
        if role == "fuse":
            raise InvalidComposition(f"composition: {ref!r} is a fusion; write {{'fuse': {ref!r}}}")
        if role != "member":
            raise InvalidComposition(f"composition: a {rows[ref].kind} ({ref!r}) cannot be a member of a tree")
    for ref in fuse_refs:
        if kinds.get(rows[ref].kind).in_trees != "fuse":
            raise InvalidComposition(f"composition: 'fuse' takes a fusion; {ref!r} is {rows[ref].kind}")
    if len({r.base_model_id for r in rows.values()}) != 1:
        raise InvalidComposition("composition: the members were trained on different base models")
    ids = {ref: row.id for ref, row in rows.items()}
    heads = [rows[h] for h in head_refs]
    for ref, within in zip(head_refs, tree.branches if isinstance(tree, Parallel) else [tree], strict=True):
        named = leaves(within) + fusions(within)
        if ids[ref] not in {ids[n] for n in named}:
            raise InvalidComposition(f"composition: the head {ref!r} is not a member of {named}")
    return Resolved(
        raw=_rewrite(raw, ids),
        tree=parse(_rewrite(raw, ids)),
        heads=heads,
        specs=[task_spec(catalog.get_task(s, h.owner_id, h.task_id)) for h in heads],
        base_row=catalog.get_base_model(s, heads[0].base_model_id),
        leaves=[rows[r] for r in refs],
        fused=[(rows[r], adapters.fusion_members(s, rows[r].id)) for r in fuse_refs],
    )


class CompositionSpec(BaseModel):
    """`POST /v1/compositions`: a tree saved under a name (a new version when the name exists)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    composition: dict[str, Any]


def save(reg: Registry, owner_id: str, spec: CompositionSpec) -> Adapter:
    """Register the tree, its references resolved to ids, under the task of its (first) head."""
    with reg.tx() as s:
        found = resolve(s, owner_id, spec.composition)
        head = found.heads[0]
        art = CompositionArtifact(
            name=spec.name,
            tree=found.raw,
            heads=[h.id for h in found.heads],
            members=[r.id for r in found.leaves] + [f.id for f, _ in found.fused],
            hidden_size=found.base_row.hidden_size,
            fused={f.id: [m.id for m in ms] for f, ms in found.fused},
        )
    shas = artifact_store.store(reg, art)
    with reg.tx() as s:  # its lineage: every module it runs, in the order its export takes them
        return artifact_store.register_stored(
            s,
            art,
            shas,
            owner_id=owner_id,
            task_id=head.task_id,
            base_model_id=head.base_model_id,
            name=spec.name,
            fusion_members=art.export_order(),
        )
