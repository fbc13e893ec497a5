"""Micro-batching for /v1/predict: requests queue, and are drained in batches bounded by rows and by
a short wait. The runtime runs one batch per resident base, one forward per group of rows that can share
it (all bottleneck adapters together; each fusion; each prompt).
Inference runs off the event loop. The queue is bounded: when full, callers get 503 + Retry-After.
Each request has a deadline after which it fails cleanly."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from api.errors import Problem
from composer.data import Example
from composer.serving import Resident, RowOutput, Runtime


@dataclass
class Pending:
    resident: Resident
    module_id: str
    rows: list[Example]
    deadline: float
    abandoned: bool = False  # the caller went away (timeout, disconnect) and released its module lease
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    def __init__(
        self,
        runtime: Runtime,
        max_rows: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_rows: int = 512,
        timeout_s: float = 30.0,
    ):
        self.runtime = runtime
        self.max_rows, self.max_wait, self.max_queue_rows, self.timeout = (
            max_rows,
            max_wait_ms / 1000,
            max_queue_rows,
            timeout_s,
        )
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.queued_rows = 0
        self.batches = 0
        self.forward_seconds = 0.0  # the runtime's predict, summed over batches (operators: /serving/stats)
        self.arriving = 0  # requests between "accepted" and "queued" (still resolving): worth waiting for
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    def expect(self) -> None:
        """Called when a request starts resolving, so the batcher knows company is coming."""
        self.arriving += 1

    def gone(self) -> None:
        """A request that was expected failed before it was queued."""
        self.arriving = max(0, self.arriving - 1)

    async def submit(self, resident: Resident, module_id: str, rows: list[Example]) -> list[RowOutput]:
        if self.queued_rows + len(rows) > self.max_queue_rows:
            self.gone()
            raise Problem(503, "overloaded", "the prediction queue is full; retry shortly", retry_after=1)
        self.start()
        self.arriving = max(0, self.arriving - 1)
        item = Pending(resident, module_id, rows, time.monotonic() + self.timeout)
        self.queued_rows += len(rows)
        await self.queue.put(item)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), self.timeout)
        except TimeoutError:
            item.abandoned = True
            raise Problem(503, "deadline-exceeded", f"the prediction did not finish within {self.timeout:g}s") from None
        except asyncio.CancelledError:
            item.abandoned = True  # its rows must not run: the module may be evicted once the lease is gone
            raise

    async def _loop(self) -> None:
        while True:
            first = await self.queue.get()
            items, rows = [first], len(first.rows)
            # Wait for company only when more requests are on their way; a lone request runs at once,
            # and under load the requests that arrive during a forward are all taken by the next one.
            end = time.monotonic() + (self.max_wait if self.arriving or not self.queue.empty() else 0.0)
            while rows < self.max_rows:
                if not self.queue.empty():
                    nxt = self.queue.get_nowait()
                elif (left := end - time.monotonic()) <= 0:
                    break
                else:
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                items.append(nxt)
                rows += len(nxt.rows)
            self.queued_rows -= rows
            groups: dict[int, list[Pending]] = {}
            for it in items:
                if it.abandoned:
                    continue
                if time.monotonic() > it.deadline:
                    if not it.future.done():
                        it.future.set_exception(
                            Problem(503, "deadline-exceeded", "the request waited past its deadline")
                        )
                    continue
                groups.setdefault(id(it.resident), []).append(it)
            for group in groups.values():
                await self._run(group)

    async def _run(self, group: list[Pending]) -> None:
        rows = [(it.module_id, ex) for it in group for ex in it.rows]

        def forward() -> list[RowOutput]:
            t = time.perf_counter()
            try:
                return self.runtime.predict(group[0].resident, rows)
            finally:
                self.forward_seconds += time.perf_counter() - t

        try:
            out = await run_in_threadpool(forward)
        except Exception as e:  # noqa: BLE001 - the whole group failed; each caller gets the error
            for it in group:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        self.batches += 1
        i = 0
        for it in group:
            n = len(it.rows)
            if not it.future.done():
                it.future.set_result(out[i : i + n])
            i += n
