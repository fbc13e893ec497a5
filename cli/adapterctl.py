"""`adapterctl`: a small client for the HTTP API. Configure with --url/--key or COMPOSER_URL/COMPOSER_KEY."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from cli import pool


class Client:
    def __init__(self, url: str, key: str):
        self.http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=300)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
                msg = f"{body.get('title')}: {body.get('detail')}" + (
                    f" (line {body['line']})" if body.get("line") else ""
                )
            except ValueError:
                msg = r.text
            raise SystemExit(f"error {r.status_code}: {msg}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content


def watch(c: Client, job_id: str) -> dict:
    """Follow a job's event stream with a progress bar showing the loss; returns the final job."""
    bar = None
    with c.http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=None) as s:
        for line in s.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev.get("type") == "progress":
                p = ev["payload"]
                bar = bar or tqdm(total=p.get("total"), unit="step", desc=job_id[:16])
                bar.n = p.get("step", 0)
                bar.set_postfix(epoch=p.get("epoch"), loss=f"{p.get('loss', 0):.4f}")
                bar.refresh()
            elif ev.get("type") == "metric":
                tqdm.write(
                    "validation: " + json.dumps({k: v for k, v in ev["payload"].items() if k not in ("step",)}),
                    file=sys.stderr,
                )
            elif ev.get("type") == "error":
                tqdm.write("error: " + ev["payload"].get("message", ""), file=sys.stderr)
            elif "status" in ev:  # the final `end` event
                break
    if bar:
        bar.close()
    return c.call("GET", f"/v1/jobs/{job_id}")


def describe_fusion(adapter: dict) -> str:
    """A fusion's comparison as a newcomer reads it: each member's validation score (or why it has none),
    the best member, the fusion, the winning evaluation, and the mean attention per member."""
    m = adapter.get("metrics") or {}
    cmp, att = m.get("comparison"), m.get("mean_attention") or {}
    if not cmp:
        return ""
    metric, best = cmp["metric"], cmp.get("best_member") or {}
    lines = [f"{'member':<40} {metric + ' (val)':>16} {'attention':>10}"]
    for mid, sc in cmp["members"].items():
        shown = f"{sc:.4f}" if sc is not None else "another task"
        mark = "  <- best member" if mid == best.get("id") else ""
        lines.append(f"{mid:<40} {shown:>16} {att.get(mid, float('nan')):>10.3f}{mark}")
    fused = cmp.get("fusion")
    lines.append(f"{'fusion ' + str(adapter.get('id', '')):<40} {fused if fused is None else f'{fused:.4f}':>16}")
    lines.append(f"winning evaluation: {cmp.get('winner')}")
    if best and fused is not None:
        delta = fused - best["score"]
        verdict = "at least" if delta >= 0 else "BELOW"
        lines.append(f"fusion minus best member: {delta:+.4f} ({verdict} its best member on validation)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adapterctl")
    p.add_argument("--url", default=os.environ.get("COMPOSER_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("COMPOSER_KEY"))
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tasks").add_subparsers(dest="sub", required=True).add_parser("create")
    t.add_argument("name")
    t.add_argument("--kind", default="classification", choices=["classification", "regression"])
    t.add_argument("--labels", default="", help="comma-separated")
    d = sub.add_parser("datasets").add_subparsers(dest="sub", required=True).add_parser("upload")
    d.add_argument("task")
    d.add_argument("file")
    d.add_argument("--split", required=True, choices=["train", "validation", "test"])
    j = sub.add_parser("jobs").add_subparsers(dest="sub", required=True)
    js = j.add_parser("submit")
    js.add_argument("spec", help="a JSON file with the job body ({'type': ..., ...}), or - for stdin")
    js.add_argument("--idempotency-key")
    js.add_argument("--watch", action="store_true")
    jw = j.add_parser("watch")
    jw.add_argument("job_id")
    f = sub.add_parser("fuse")
    f.add_argument("task")
    f.add_argument("adapters", nargs="+")
    f.add_argument("--train", required=True)
    f.add_argument("--validation")
    f.add_argument("--watch", action="store_true")
    e = sub.add_parser("ensemble").add_subparsers(dest="sub", required=True).add_parser("predict")
    e.add_argument("ensemble_id")
    e.add_argument("texts", nargs="+")
    e.add_argument("--strategy")
    e.add_argument("--early-exit", action="store_true")
    pr = sub.add_parser("predict")
    pr.add_argument("adapter")
    pr.add_argument("texts", nargs="+")
    pr.add_argument("--attention", action="store_true")
    a = sub.add_parser("adapters").add_subparsers(dest="sub", required=True)
    ai = a.add_parser("import")
    ai.add_argument("archive")
    ai.add_argument("--task", required=True)
    ai.add_argument("--base-model", required=True)
    ash = a.add_parser("show", help="an adapter; a fusion with its members' scores and attention")
    ash.add_argument("adapter")
    aa = a.add_parser("alias", help="point task@alias at an adapter")
    aa.add_argument("task")
    aa.add_argument("alias")
    aa.add_argument("adapter")
    aa.add_argument("--force", action="store_true", help="even a fusion that scores below its best member")
    ad = a.add_parser("download")
    ad.add_argument("adapter")
    ad.add_argument("--out", required=True)
    ad.add_argument(
        "--format",
        choices=["native", "adapterhub", "peft"],
        default="native",
        help="ours, or the layout AdapterHub `adapters` or PEFT load (a fusion comes with its members)",
    )
    ad.add_argument("--without-head", action="store_true", help="export the module without its prediction head")
    pool.add_parser(sub)
    args = p.parse_args(argv)
    if not args.key:
        p.error("an API key is needed: --key or COMPOSER_KEY")
    c = Client(args.url, args.key)
    out: Any
    if args.cmd == "pool":
        out = pool.run(c, args)
    elif args.cmd == "tasks":
        labels = [x for x in args.labels.split(",") if x]
        out = c.call("POST", "/v1/tasks", json={"name": args.name, "kind": args.kind, "labels": labels})
    elif args.cmd == "datasets":
        with open(args.file, "rb") as fh:
            out = c.call(
                "POST",
                f"/v1/tasks/{args.task}/datasets",
                data={"split": args.split},
                files={"file": (Path(args.file).name, fh)},
            )
    elif args.cmd == "jobs" and args.sub == "submit":
        body = json.loads(sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text())
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
        out = c.call("POST", "/v1/jobs", json=body, headers=headers)
        out = watch(c, out["id"]) if args.watch else out
    elif args.cmd == "jobs":
        out = watch(c, args.job_id)
    elif args.cmd == "fuse":
        body = {
            "task": args.task,
            "adapters": args.adapters,
            "train_dataset": args.train,
            "validation_dataset": args.validation,
        }
        out = c.call("POST", "/v1/fusions", json={k: v for k, v in body.items() if v is not None})
        if args.watch:
            out = watch(c, out["id"])
            adapter = (out.get("result") or {}).get("adapter_id")
            if adapter:
                print(describe_fusion(c.call("GET", f"/v1/adapters/{adapter}")), file=sys.stderr)
    elif args.cmd == "ensemble":
        body = {"inputs": [{"text": t} for t in args.texts], "early_exit": args.early_exit}
        if args.strategy:
            body["strategy"] = args.strategy
        out = c.call("POST", f"/v1/ensembles/{args.ensemble_id}/predict", json=body)
    elif args.cmd == "predict":
        out = c.call(
            "POST",
            "/v1/predict",
            json={
                "adapter": args.adapter,
                "inputs": [{"text": t} for t in args.texts],
                "return_fusion_attention": args.attention,
            },
        )
    elif args.sub == "import":
        with open(args.archive, "rb") as fh:
            out = c.call(
                "POST",
                "/v1/adapters/import",
                data={"task": args.task, "base_model": args.base_model},
                files={"file": (Path(args.archive).name, fh)},
            )
    elif args.sub == "show":
        out = c.call("GET", f"/v1/adapters/{args.adapter}")
        text = describe_fusion(out)
        if text:
            print(text, file=sys.stderr)
    elif args.sub == "alias":
        body = {"adapter": args.adapter, "force": args.force}
        out = c.call("PUT", f"/v1/adapters/aliases/{args.task}/{args.alias}", json=body)
    else:
        query = f"?format={args.format}" + ("&with_head=false" if args.without_head else "")
        Path(args.out).write_bytes(c.call("GET", f"/v1/adapters/{args.adapter}/download{query}"))
        out = {"written": args.out}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
