"""Serving composition trees: `POST /v1/predict` with a `composition` (the grammar and its checks are
`service.compositions`), or with the id of a saved composition (`api/routes/compositions.py` saves one)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from api.errors import Problem
from api.loaders import ensure
from api.schemas import render
from composer.composed import predict_parallel, predict_rows, predict_tree
from composer.composition import Parallel
from composer.data import Example
from composer.errors import ConfigError
from registry_db.models import Adapter
from service.compositions import InvalidComposition, resolve


def predict_composition(request, reg, caller, raw: Any, inputs: list[Example], saved: Adapter | None = None) -> dict:  # type: ignore[no-untyped-def]
    """Resolve, check, lease and run one composition; the response is shaped as predict's."""
    try:
        with reg.tx() as s:
            found = resolve(s, caller.owner_id, raw)
    except InvalidComposition as e:
        raise Problem(422, "invalid-composition", str(e), field=e.where) from None
    runtime, device = request.app.state.runtime, request.app.state.settings.device
    tree, heads = found.tree, [h.id for h in found.heads]
    with ExitStack() as held:
        leased = [held.enter_context(ensure(runtime, reg, r, found.base_row, [], device)) for r in found.leaves]
        leased += [held.enter_context(ensure(runtime, reg, f, found.base_row, m, device)) for f, m in found.fused]
        try:
            if isinstance(tree, Parallel):
                per_branch = predict_parallel(runtime, leased[0].resident, tree, heads, inputs)
            else:
                per_branch = [predict_tree(runtime, leased[0].resident, tree, heads[0], inputs)]
        except ConfigError as e:
            raise Problem(422, "invalid-composition", str(e), field="composition") from None
    rendered = [
        render(h, spec, [], outs)["outputs"] for h, spec, outs in zip(found.heads, found.specs, per_branch, strict=True)
    ]
    named = {"composition": raw} if saved is None else {"adapter": saved.id, "composition": found.raw}
    if isinstance(tree, Parallel):  # one request, several tasks: each branch with its own head's answers
        branches = [{"head": h, "outputs": outs} for h, outs in zip(heads, rendered, strict=True)]
        return {**named, "kind": "parallel", "branches": branches}
    return {**named, "head": heads[0], "kind": "composition", "outputs": rendered[0]}


def predict_per_row(request, reg, caller, raws: list[Any], inputs: list[Example]) -> dict:  # type: ignore[no-untyped-def]
    """Each row under its own tree, all in one forward; each output names its head."""
    distinct = {json.dumps(r, sort_keys=True): r for r in raws}
    found = {}
    try:
        with reg.tx() as s:
            for key, raw in distinct.items():
                found[key] = resolve(s, caller.owner_id, raw)
    except InvalidComposition as e:
        raise Problem(422, "invalid-composition", f"inputs: {e}", field="inputs") from None
    if any(isinstance(f.tree, Parallel) for f in found.values()):
        raise Problem(422, "invalid-composition", "inputs: a row's composition cannot be a parallel", field="inputs")
    if len({f.base_row.id for f in found.values()}) != 1:
        raise Problem(422, "wrong-base", "inputs: the rows' compositions are on different base models")
    per_row = [found[json.dumps(r, sort_keys=True)] for r in raws]
    runtime, device, base_row = request.app.state.runtime, request.app.state.settings.device, per_row[0].base_row
    leaves = {r.id: r for f in found.values() for r in f.leaves}
    fused = {f.id: (f, m) for x in found.values() for f, m in x.fused}
    with ExitStack() as held:
        leased = [held.enter_context(ensure(runtime, reg, r, base_row, [], device)) for r in leaves.values()]
        leased += [held.enter_context(ensure(runtime, reg, f, base_row, m, device)) for f, m in fused.values()]
        try:
            outs = predict_rows(
                runtime, leased[0].resident, [f.tree for f in per_row], [f.heads[0].id for f in per_row], inputs
            )
        except ConfigError as e:
            raise Problem(422, "invalid-composition", f"inputs: {e}", field="inputs") from None
    rendered = [
        {"head": f.heads[0].id, **render(f.heads[0], f.specs[0], [], [o])["outputs"][0]}
        for f, o in zip(per_row, outs, strict=True)
    ]
    return {"kind": "compositions", "outputs": rendered}
