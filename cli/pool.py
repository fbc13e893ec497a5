"""`adapterctl pool train`: one ST-A per built pool task, trained by the service's own jobs.

For each task in `.assets/pool` (built by `python -m composer.pool build`) it creates the task, uploads
at most `--max-train` training rows and `--max-validation` validation rows, and submits an `adapter`
job, which the workers run and register with its validation metrics. A task that already has an active
adapter of that name on that base is skipped, and one whose job is still queued or running is watched
rather than submitted again, so a rerun resumes where the last one stopped. Ctrl-C cancels the job being
watched and stops; rerun to go on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from cli.adapterctl import Client


def jsonl_head(path: Path, n: int) -> bytes:
    with open(path, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(n), f, strict=False)]
    return "".join(lines).encode("utf-8")


def find_items(c: Client, path: str, **params: Any) -> list[dict]:
    items, cursor = [], None
    while True:
        page = c.call("GET", path, params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def ensure_task(c: Client, task: str, labels: list[str]) -> str:
    """The task's id, created first if it does not exist."""
    r = c.http.get(f"/v1/tasks/{task}")
    if r.status_code == 404:
        return c.call("POST", "/v1/tasks", json={"name": task, "kind": "classification", "labels": labels})["id"]
    if r.status_code >= 400:
        c.call("GET", f"/v1/tasks/{task}")  # raises with the API's message
    return r.json()["id"]


def ensure_dataset(c: Client, task: str, split: str, path: Path, n: int) -> str:
    """The first n rows of the split (its order is already seeded), uploaded once: found again by sha256."""
    data = jsonl_head(path, n)
    sha = hashlib.sha256(data).hexdigest()
    for d in find_items(c, f"/v1/tasks/{task}/datasets", split=split):
        if d.get("sha256") == sha:
            return d["id"]
    out = c.call("POST", f"/v1/tasks/{task}/datasets", data={"split": split}, files={"file": (f"{split}.jsonl", data)})
    return out["id"]


def pool_job(c: Client, task_id: str, name: str) -> dict | None:
    """A queued or running adapter job of this pool task, to watch instead of submitting again."""
    for status in ("running", "queued"):
        for j in find_items(c, "/v1/jobs", status=status, type="adapter"):
            if j["spec"].get("task") == task_id and j["spec"].get("name") == name:
                return j
    return None


def train_pool(
    c: Client,
    root: Path,
    base_model: str,
    tasks: list[str] | None = None,
    max_train: int = 2000,
    max_validation: int = 500,
    preset: str = "seq_bn",
    hyperparameters: dict[str, Any] | None = None,
) -> list[dict]:
    from cli.adapterctl import watch

    built = sorted(p.parent.name for p in root.glob("*/meta.json"))
    todo = [t for t in built if not tasks or t in tasks]
    if not todo:
        raise SystemExit(f"no built pool tasks in {root}; run: python -m composer.pool build")
    base_id = c.call("GET", f"/v1/base-models/{base_model}")["id"]
    report = []
    for i, task in enumerate(todo, start=1):
        meta = json.loads((root / task / "meta.json").read_text())
        name = f"pool-{task}"
        task_id = ensure_task(c, task, sorted(meta["labels"]))
        done = [a for a in find_items(c, "/v1/adapters", task=task, status="ready") if a["name"] == name]
        done = [a for a in done if a["base_model_id"] == base_id]
        if done:
            tqdm.write(f"[{i}/{len(todo)}] {task}: already trained ({done[0]['id']}), skipped", file=sys.stderr)
            report.append({"task": task, "adapter_id": done[0]["id"], "skipped": True})
            continue
        job = pool_job(c, task_id, name)
        if job is None:
            train = ensure_dataset(c, task, "train", root / task / "train.jsonl", max_train)
            val = ensure_dataset(c, task, "validation", root / task / "validation.jsonl", max_validation)
            body = {
                "type": "adapter",
                "task": task,
                "base_model": base_model,
                "preset": preset,
                "name": name,
                "train_dataset": train,
                "validation_dataset": val,
                "hyperparameters": hyperparameters or {},
            }
            job = c.call("POST", "/v1/jobs", json=body)
        tqdm.write(f"[{i}/{len(todo)}] {task}: job {job['id']}", file=sys.stderr)
        t0 = time.monotonic()
        try:
            final = watch(c, job["id"])
        except KeyboardInterrupt:
            c.call("POST", f"/v1/jobs/{job['id']}/cancel")
            tqdm.write(f"cancelled {job['id']} ({task}); rerun `adapterctl pool train` to go on", file=sys.stderr)
            raise SystemExit(130) from None
        result = final.get("result") or {}
        metrics = result.get("metrics") or {}
        tqdm.write(f"    {final['status']} in {time.monotonic() - t0:.0f} s: {json.dumps(metrics)}", file=sys.stderr)
        report.append({"task": task, "status": final["status"], "adapter_id": result.get("adapter_id"), **metrics})
    return report


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pool", help="the transfer pool (../shared/POOL.md)").add_subparsers(dest="sub", required=True)
    t = p.add_parser("train", help="train and register one ST-A per built pool task (a rerun skips those done)")
    t.add_argument("--dir", default=".assets/pool", help="where `python -m composer.pool build` wrote the tasks")
    t.add_argument("--base-model", default="all-MiniLM-L6-v2")
    t.add_argument("--tasks", default="", help="comma-separated (default: every built task)")
    t.add_argument("--max-train", type=int, default=2000)
    t.add_argument("--max-validation", type=int, default=500)
    t.add_argument("--preset", default="seq_bn")
    t.add_argument("--hyperparameters", default="{}", help="JSON, e.g. '{\"epochs\": 3}'")


def run(c: Client, args: Any) -> list[dict]:
    tasks = [t for t in args.tasks.split(",") if t]
    return train_pool(
        c,
        Path(args.dir),
        args.base_model,
        tasks,
        args.max_train,
        args.max_validation,
        args.preset,
        json.loads(args.hyperparameters),
    )
