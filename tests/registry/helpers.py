from __future__ import annotations

from registry_db.registry import Registry
from registry_db.repo import adapters, catalog, keys


def seed(reg: Registry, owner: str = "acme", hidden: int = 384) -> dict[str, str]:
    """An owner, a base model and a task; returns their ids."""
    with reg.tx() as s:
        o = keys.create_owner(s, owner)
        bm, _ = catalog.register_base_model(
            s,
            name=f"minilm-{owner}",
            identity=f"{owner:0<32}"[:32],
            config_hash="c" * 64,
            weights_hash="w" * 64,
            architecture="bert",
            hidden_size=hidden,
            num_layers=6,
            path="/models/minilm",
        )
        t = catalog.create_task(s, o.id, "sentiment", "classification", ["neg", "pos"])
        return {"owner": o.id, "base": bm.id, "task": t.id}


def add_adapter(reg: Registry, ids: dict[str, str], name: str = "sentiment", **kw) -> str:
    with reg.tx() as s:
        row = adapters.register_adapter(
            s,
            owner_id=ids["owner"],
            task_id=ids["task"],
            base_model_id=ids["base"],
            kind=kw.pop("kind", "st_a"),
            name=name,
            method_config={"preset": "seq_bn"},
            hidden_size=kw.pop("hidden_size", 384),
            **kw,
        )
        return row.id
