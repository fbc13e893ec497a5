"""Serving composition trees: `POST /v1/predict` with a `composition` (the grammar and its checks are
`service.compositions`), or with the id of a saved composition (`api/routes/compositions.py` saves one)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from api.errors import Problem
from api.loaders import ensure
from api.schemas import render
from composer.composed import predict_parallel, predict_tree
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
