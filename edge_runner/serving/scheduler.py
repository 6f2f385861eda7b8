"""Per-model scheduling: a bounded queue, worker thread(s) and dynamic batching.

Composed, not decorated: the server hands validated inputs to ``submit`` and
waits on a future. Workers take the oldest job, gather compatible jobs (same
non-batch shapes, dtypes and requested outputs) until ``max_batch_size`` rows
or ``max_queue_delay_ms`` has passed, run the backend once, and split results.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from edge_runner.backends.base import Backend, Tensors
from edge_runner.core.errors import EdgeRunnerError, InferenceError, ModelNotReady, Overloaded, RequestTimeout


@dataclass(frozen=True)
class BatchPolicy:
    """How one model's queue behaves."""

    enabled: bool = True
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 64
    instances: int = 1


@dataclass(eq=False)
class _Job:
    inputs: Tensors
    outputs: tuple[str, ...] | None
    rows: int
    key: tuple[object, ...]
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Any] = field(default_factory=Future)
    #: other work for the model (embeddings): run as it is, never batched with another job
    work: Callable[[], Any] | None = None


T = TypeVar("T")


def _signature(inputs: Tensors, outputs: tuple[str, ...] | None, batching: bool) -> tuple[object, ...]:
    parts: list[object] = [outputs]
    for name in sorted(inputs):
        array = inputs[name]
        parts.append((name, str(array.dtype), array.shape[1:] if batching else array.shape))
    return tuple(parts)


BatchObserver = Callable[[int], None]


class ModelScheduler:
    """Queue + workers in front of one loaded backend."""

    def __init__(
        self,
        backend: Backend,
        policy: BatchPolicy,
        batching: bool,
        on_batch: BatchObserver | None = None,
        name: str = "",
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.batching = batching and policy.enabled and policy.max_batch_size > 1
        self.on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0
        self._running_jobs = 0
        self._callers = 0  # submit() calls in progress: the batcher only waits when others may join
        self._workers = [
            threading.Thread(target=self._run, name=f"sched-{name}-{i}", daemon=True)
            for i in range(max(1, policy.instances))
        ]
        for worker in self._workers:
            worker.start()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Jobs waiting or running."""
        return len(self._queue) + self._busy

    def submit(self, inputs: Tensors, outputs: Sequence[str] | None = None, timeout_s: float | None = None) -> Tensors:
        """Run inputs through the model, batched with others; blocks until done or the deadline."""
        outs = tuple(outputs) if outputs else None
        rows = int(next(iter(inputs.values())).shape[0]) if self.batching and inputs else 1
        limit = self.policy.max_batch_size
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._callers += 1
        try:
            if self.batching and rows > limit:
                chunks = [{k: v[i : i + limit] for k, v in inputs.items()} for i in range(0, rows, limit)]
                jobs = [self._enqueue(chunk, outs, min(limit, rows - i * limit)) for i, chunk in enumerate(chunks)]
            else:
                jobs = [self._enqueue(inputs, outs, rows)]
            results: Tensors = self._collect(jobs, deadline, timeout_s)
            return results
        finally:
            with self._cond:
                self._callers -= 1

    def run(self, work: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``work`` (e.g. an embedding call) on a model worker: same queue, limit and deadline as ``submit``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._callers += 1
        try:
            job = _Job({}, None, 1, (object(),), work=work)
            self._enqueue_job(job)
            return cast(T, self._collect([job], deadline, timeout_s))
        finally:
            with self._cond:
                self._callers -= 1

    def _collect(self, jobs: list[_Job], deadline: float | None, timeout_s: float | None) -> Any:
        parts = []
        for job in jobs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                parts.append(job.future.result(timeout=remaining))
            except CancelledError:
                raise ModelNotReady("the model was unloaded before this request ran; retry") from None
            except FutureTimeout:
                for pending in jobs:
                    pending.future.cancel()
                raise RequestTimeout(
                    f"inference did not finish within {timeout_s:.1f}s; the model is busy - "
                    "retry, or raise --request-timeout-ms"
                ) from None
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _enqueue(self, inputs: Tensors, outputs: tuple[str, ...] | None, rows: int) -> _Job:
        return self._enqueue_job(_Job(inputs, outputs, rows, _signature(inputs, outputs, self.batching)))

    def _enqueue_job(self, job: _Job) -> _Job:
        with self._cond:
            if self._closed:
                raise Overloaded("the server is shutting down", retry_after_s=5)
            if len(self._queue) >= self.policy.max_queue_size:
                raise Overloaded(
                    f"model queue is full ({self.policy.max_queue_size} waiting); retry shortly", retry_after_s=1
                )
            self._queue.append(job)
            self._cond.notify()
        return job

    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            if not self.batching:
                self._busy += 1
                self._running_jobs += 1
                return batch
            deadline = first.enqueued + self.policy.max_queue_delay_ms / 1000.0
            while rows < self.policy.max_batch_size:
                job = self._pop_compatible(first.key, self.policy.max_batch_size - rows)
                if job is not None:
                    batch.append(job)
                    rows += job.rows
                    continue
                wait = deadline - time.monotonic()
                # Waiting only pays when other callers (beyond those running or in this batch) may still join.
                others = self._callers - len(batch) - self._running_jobs
                if wait <= 0 or self._closed or others <= 0 or rows in self.policy.preferred_batch_sizes:
                    break
                self._cond.wait(wait)
            self._busy += 1
            self._running_jobs += len(batch)
            return batch

    def _pop_compatible(self, key: tuple[object, ...], room: int) -> _Job | None:
        for job in self._queue:
            if job.key == key and job.rows <= room:
                self._queue.remove(job)
                return job
        return None

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                live = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if live:
                    self._execute(live)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._running_jobs -= len(batch)

    def _execute(self, batch: list[_Job]) -> None:
        try:
            if len(batch) == 1:
                merged = batch[0].inputs
            else:
                merged = {name: np.concatenate([job.inputs[name] for job in batch]) for name in batch[0].inputs}
            work = batch[0].work
            if work is not None:  # never batched: its key is unique
                batch[0].future.set_result(work())
                return
            if self.on_batch is not None:
                self.on_batch(sum(job.rows for job in batch))
            results = self.backend.infer(merged, batch[0].outputs)
        except EdgeRunnerError as exc:
            for job in batch:
                job.future.set_exception(exc)
            return
        except Exception as exc:  # a runtime bug must not kill the worker thread
            err = InferenceError(f"{type(exc).__name__}: {exc}")
            for job in batch:
                job.future.set_exception(err)
            return
        start = 0
        for job in batch:
            if len(batch) == 1:
                job.future.set_result(results)
            else:
                job.future.set_result({k: v[start : start + job.rows] for k, v in results.items()})
            start += job.rows

    def close(self, drain_timeout_s: float = 10.0) -> None:
        """Stop taking jobs, let queued ones finish (bounded), stop workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        end = time.monotonic() + drain_timeout_s
        for worker in self._workers:
            worker.join(max(0.0, end - time.monotonic()))
        with self._cond:
            while self._queue:
                job = self._queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ModelNotReady("the model was unloaded before this request ran; retry"))
