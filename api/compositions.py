"""`POST /v1/predict` with a `composition`: a tree of registered adapters, served in one forward.

The grammar (JSON): a registry reference (an id, `name:version` or `task@alias`) is a leaf;
`{"stack": [node, …], "head": ref}` runs its members in order at every site; `{"average": [node, …],
"weights": [w, …], "head": ref}` mixes their outputs; `{"fuse": ref}` runs a registered fusion (inside a
Stack, as adapters 1.3.0 allows: `{"stack": ["ad_dom", {"fuse": "ad_f"}]}`, the fusion's head by default). A Stack's head is its last member's unless one is
named; an Average names its head. The nesting rules are adapters 1.3.0's (`composer.composition`), and
an invalid tree is a 422 that names the offending node (`stack[1].average`)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from api.errors import Problem
from api.loaders import ensure
from api.schemas import render
from composer.composed import predict_parallel, predict_tree
from composer.composition import Average, Fuse, Parallel, Stack, check_tree, fusions, last_member, leaves
from composer.data import Example
from composer.errors import ConfigError
from registry_db.errors import NotFound
from registry_db.repo import adapters, catalog
from service.catalog import task_spec

MAX_MEMBERS = 16
BLOCKS = ("stack", "average", "parallel", "fuse")


def parse(node: Any, where: str = "composition") -> Any:
    """The JSON tree as composer nodes whose leaves are the references, as written."""
    if isinstance(node, str):
        if not node:
            raise Problem(422, "invalid-composition", f"{where}: an empty reference", field=where)
        return node
    if not isinstance(node, dict):
        raise Problem(422, "invalid-composition", f"{where}: a reference or a block, got {type(node).__name__}")
    blocks = [k for k in BLOCKS if k in node]
    unknown = sorted(set(node) - {*BLOCKS, "weights", "head"})
    if len(blocks) != 1 or unknown:
        detail = (
            f"{where}: one of 'stack', 'average', 'parallel' or 'fuse' (with 'weights', 'head'); got {sorted(node)}"
        )
        raise Problem(422, "invalid-composition", detail, field=where)
    kind, children = blocks[0], node[blocks[0]]
    if kind == "fuse":  # a registered fusion, by its reference; its members are the fusion's
        if not isinstance(children, str) or not children or len(node) != 1:
            raise Problem(422, "invalid-composition", f"{where}.fuse: the reference of one fusion", field=where)
        return Fuse(children)
    if not isinstance(children, list):
        raise Problem(422, "invalid-composition", f"{where}.{kind}: a list of members", field=where)
    if "weights" in node and kind != "average":
        raise Problem(422, "invalid-composition", f"{where}: only an average takes weights", field=where)
    parsed = [parse(c, f"{where}.{kind}[{i}]") for i, c in enumerate(children)]
    if kind == "stack":
        return Stack(*parsed)
    if kind == "parallel":
        if "head" in node:
            raise Problem(422, "invalid-composition", f"{where}: each branch names its own head", field=where)
        return Parallel(*parsed)
    weights = node.get("weights")
    if weights is not None and (not isinstance(weights, list) or not all(isinstance(w, int | float) for w in weights)):
        raise Problem(422, "invalid-composition", f"{where}.weights: a list of numbers", field=where)
    return Average(*parsed, weights=weights)


def _with_leaves(node: Any, ids: dict[str, str]) -> Any:
    if isinstance(node, str):
        return ids[node]
    if isinstance(node, Fuse):
        return Fuse(ids[node.fusion])
    children = [_with_leaves(c, ids) for c in node.children]
    if isinstance(node, Parallel):
        return Parallel(*children)
    return Stack(*children) if isinstance(node, Stack) else Average(*children, weights=node.weights)


def _head_of(raw: Any, node: Any, where: str) -> str:
    """A tree's head reference: a leaf is its own; a Stack's is its last member's unless named; an Average
    names it."""
    if isinstance(raw, str):
        return raw
    if raw.get("head") is not None:
        return str(raw["head"])
    if isinstance(node, Average):
        raise Problem(422, "invalid-composition", f"{where}: an average names its head ('head': a member)")
    return last_member(node)


def predict_composition(request, reg, caller, raw: dict[str, Any], inputs: list[Example]) -> dict:  # type: ignore[no-untyped-def]
    """Resolve, check, lease and run one composition; the response is shaped as predict's."""
    tree = parse(raw)
    if isinstance(tree, str | Fuse):
        raise Problem(422, "invalid-composition", "composition: a block; serve one module with 'adapter'")
    try:
        check_tree(tree)
    except ConfigError as e:
        raise Problem(422, "invalid-composition", str(e), field="composition") from None
    refs, fuse_refs = list(dict.fromkeys(leaves(tree))), list(dict.fromkeys(fusions(tree)))
    if isinstance(tree, Parallel):
        head_refs = [
            _head_of(r, n, f"composition.parallel[{i}]")
            for i, (r, n) in enumerate(zip(raw["parallel"], tree.branches, strict=True))
        ]
    else:
        head_refs = [_head_of(raw, tree, "composition")]
    if len(refs) + len(fuse_refs) > MAX_MEMBERS:
        raise Problem(422, "invalid-composition", f"composition: more than {MAX_MEMBERS} members")
    with reg.tx() as s:
        rows = {}
        for ref in dict.fromkeys([*refs, *fuse_refs, *head_refs]):
            try:
                rows[ref] = adapters.resolve_adapter(s, caller.owner_id, ref)
            except NotFound:
                raise Problem(404, "not-found", f"composition: adapter {ref!r} not found") from None
        for ref in refs:
            if rows[ref].kind == "fusion":
                raise Problem(
                    422, "invalid-composition", f"composition: {ref!r} is a fusion; write {{'fuse': {ref!r}}}"
                )
        for ref in fuse_refs:
            if rows[ref].kind != "fusion":
                raise Problem(
                    422, "invalid-composition", f"composition: 'fuse' takes a fusion; {ref!r} is {rows[ref].kind}"
                )
        members = {ref: adapters.fusion_members(s, rows[ref].id) for ref in fuse_refs}
        archived = [r.id for r in rows.values() if r.status == "archived"]
        if archived:
            raise Problem(404, "archived", f"composition: adapters {archived} are archived")
        if len({r.base_model_id for r in rows.values()}) != 1:
            raise Problem(422, "wrong-base", "composition: the members were trained on different base models")
        heads = [rows[h] for h in head_refs]
        specs = [task_spec(catalog.get_task(s, h.owner_id, h.task_id)) for h in heads]
        base_row = catalog.get_base_model(s, heads[0].base_model_id)
    ids = {ref: row.id for ref, row in rows.items()}
    tree_ids = _with_leaves(tree, ids)
    runtime, device = request.app.state.runtime, request.app.state.settings.device
    with ExitStack() as held:
        leased = [held.enter_context(ensure(runtime, reg, rows[r], base_row, [], device)) for r in refs]
        leased += [held.enter_context(ensure(runtime, reg, rows[r], base_row, members[r], device)) for r in fuse_refs]
        try:
            if isinstance(tree_ids, Parallel):
                per_branch = predict_parallel(runtime, leased[0].resident, tree_ids, [h.id for h in heads], inputs)
            else:
                per_branch = [predict_tree(runtime, leased[0].resident, tree_ids, heads[0].id, inputs)]
        except ConfigError as e:
            raise Problem(422, "invalid-composition", str(e), field="composition") from None
    rendered = [render(h, spec, [], outs)["outputs"] for h, spec, outs in zip(heads, specs, per_branch, strict=True)]
    if isinstance(tree_ids, Parallel):  # one request, several tasks: each branch with its own head's answers
        branches = [{"head": h.id, "outputs": outs} for h, outs in zip(heads, rendered, strict=True)]
        return {"composition": raw, "kind": "parallel", "branches": branches}
    return {"composition": raw, "head": heads[0].id, "kind": "composition", "outputs": rendered[0]}
