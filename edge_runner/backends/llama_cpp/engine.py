"""Continuous batching on llama.cpp: one engine thread per loaded model, one sequence id per stream.

Each step builds one ``llama_batch`` holding the next token of every generating sequence plus as
many prompt tokens of newly admitted sequences as fit, runs one ``llama_decode`` and samples each
sequence from its own logits row with its own sampler chain. Requests join and leave between steps,
so a long generation never blocks a new one behind a lock.

Slots are bounded (``n_slots``); beyond them up to ``max_queue`` requests wait, then ``submit`` raises
``Overloaded``. A finished slot keeps its KV cache: a new request whose prompt shares a prefix with it
is admitted there and only decodes the rest. The context holds a KV cache only for the slots in use
(``NativeModel.ensure_slots``): it grows between steps when a stream takes a slot it lacks, and shrinks
to one slot after ``shrink_idle_s`` without streams.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_runner.backends.llama_cpp.native import Batch, NativeModel
from edge_runner.backends.llama_cpp.sampling import GrammarDeadEnd, Sampler, check_logit_bias
from edge_runner.backends.llama_cpp.stream import Sequence, Stream
from edge_runner.backends.llama_cpp.text import TextAssembler, common_prefix_len
from edge_runner.core.errors import EdgeRunnerError, InferenceError, InvalidInput, Overloaded
from edge_runner.core.generation import SamplingParams, TokenLogprob

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """A llama.cpp sequence id and the tokens its KV cache holds."""

    seq_id: int
    cache: list[int] = field(default_factory=list)
    seq: Sequence | None = None
    #: when its last sequence ended (monotonic), to keep the most recent prefix when the cache shrinks
    ended_at: float = 0.0


@dataclass
class EngineStats:
    """Counters for metrics and ``ps``."""

    requests: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    decode_calls: int = 0
    #: time to first token, summed over requests (divide by ``first_tokens`` for the mean)
    ttft_total_s: float = 0.0
    first_tokens: int = 0


#: idle seconds after which a KV cache grown for several streams shrinks back to one slot
SHRINK_IDLE_S = 60.0


class LlmEngine:
    """Owns a ``NativeModel`` context and drives all its sequences from one thread.

    The KV cache follows the streams in use: it grows when a stream needs a slot the context lacks, and
    after ``shrink_idle_s`` without any stream it shrinks to one slot, holding the most recent prefix.
    """

    def __init__(
        self,
        native: NativeModel,
        max_queue: int = 16,
        on_first_token: Callable[[float], None] | None = None,
        on_token_time: Callable[[float], None] | None = None,
        shrink_idle_s: float = SHRINK_IDLE_S,
    ) -> None:
        self.native = native
        self.shrink_idle_s = shrink_idle_s
        self.on_first_token = on_first_token
        self.on_token_time = on_token_time  # a finished request's mean seconds per token after the first
        self.n_slots = native.settings.n_slots
        self.max_queue = max_queue
        self.slots = [Slot(i) for i in range(self.n_slots)]
        self.stats = EngineStats()
        self._batch = Batch(native, native.settings.n_batch)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cond = threading.Condition()
        self._inflight = 0
        self._stopping = False
        self._release_on_exit: Callable[[], None] | None = None
        self._exited = False  # set by the engine thread, under the lock, as it leaves
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._thread.start()

    @property
    def max_seq_len(self) -> int:
        """Tokens one sequence may hold (prompt + completion)."""
        return self.native.n_ctx_seq

    def submit(self, prompt: list[int], params: SamplingParams) -> Stream:
        """Queue a request; raise InvalidInput for a prompt that cannot fit, Overloaded when full."""
        if not prompt:
            raise InvalidInput("the prompt is empty after tokenization")
        if len(prompt) >= self.max_seq_len:
            raise InvalidInput(
                f"the prompt is {len(prompt)} tokens; this model's context is {self.max_seq_len} tokens "
                "(raise --max-seq-len or shorten the prompt)"
            )
        check_logit_bias(params, self.native.n_vocab)
        seq = Sequence(prompt=list(prompt), params=params, assembler=TextAssembler(params.stop))
        with self._cond:
            if self._stopping:
                raise InferenceError("the model is unloading")
            if self._inflight >= self.n_slots + self.max_queue:
                self.stats.rejected += 1
                raise Overloaded(
                    f"{self._inflight} generation requests in flight ({self.n_slots} slots, queue of "
                    f"{self.max_queue}); retry later",
                    retry_after_s=1,
                )
            self._inflight += 1
            self.stats.requests += 1
            self._waiting.append(seq)
            self._cond.notify()
        return Stream(seq)

    def load(self) -> dict[str, int]:
        """Active and waiting request counts (for metrics and admission decisions)."""
        with self._cond:
            active = sum(1 for s in self.slots if s.seq is not None)
            return {"active": active, "waiting": len(self._waiting), "slots": self.n_slots}

    def close(self, release: Callable[[], None] | None = None, join_timeout_s: float = 30.0) -> bool:
        """Stop the thread, fail whatever is still running, then free the batch and call ``release``
        (which frees the model and context). Idempotent.

        Native memory is never freed while the engine thread can still use it: when the thread does not
        stop in time (stuck in a long ``llama_decode``), the thread itself frees everything on its way
        out, and this returns False.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=join_timeout_s)
        self._fail_all(InferenceError("the model was unloaded while generating"))
        with self._cond:
            if not self._exited and threading.current_thread() is not self._thread:
                self._release_on_exit = release
                log.error("the LLM engine thread is still decoding; its memory is freed when the step ends")
                return False
        self._free(release)
        return True

    def _free(self, release: Callable[[], None] | None) -> None:
        self._batch.free()
        if release is not None:
            release()

    # -- engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._waiting and not self._any_active():
                        if not self._cond.wait(self._shrink_timeout()):
                            self._shrink_locked()  # idle that long: no one is waiting on the lock but submit
                    if self._stopping:
                        return
                    admitted = self._admit_locked()
                if admitted:
                    self._fit_context()
                for seq in admitted:
                    if not seq.done:  # not failed while the context grew
                        self._prepare(seq)
                self._step()
        except Exception as exc:  # a crash must end every stream, never hang a client
            log.exception("LLM engine thread crashed")
            with self._cond:
                self._stopping = True  # later submits fail at once instead of queueing for a dead thread
            self._fail_all(InferenceError(f"generation engine failed: {exc}"))
        finally:
            with self._cond:
                self._exited = True
                release, late = self._release_on_exit, self._release_on_exit is not None
                self._release_on_exit = None
            if late:  # close() gave up waiting for us: we own the native memory now
                self._free(release)

    def _any_active(self) -> bool:
        return any(slot.seq is not None for slot in self.slots)

    def _admit_locked(self) -> list[Sequence]:
        """Move waiting requests into free slots, preferring the slot with the longest shared prefix."""
        admitted = []
        free = [slot for slot in self.slots if slot.seq is None]
        while self._waiting and free:
            seq = self._waiting.popleft()
            if seq.cancelled:
                self._inflight -= 1
                seq.release()
                continue
            slot = max(free, key=lambda s: common_prefix_len(s.cache, seq.prompt))
            free.remove(slot)
            slot.seq = seq
            admitted.append(seq)
        return admitted

    def _fit_context(self) -> None:
        """Grow the KV cache to the slots now in use; cached prefixes and running streams move with it.

        Streams in slots the context cannot hold (it could not grow) fail; a running stream whose cache did
        not move fails too; an idle or just-admitted slot whose cache did not move starts from empty.
        """
        wanted = 1 + max(slot.seq_id for slot in self.slots if slot.seq is not None)
        try:
            lost = set(self.native.ensure_slots(wanted, [slot.seq_id for slot in self.slots if slot.cache]))
        except EdgeRunnerError as exc:
            log.error("could not grow the KV cache to %d sequences: %s", wanted, exc.message)
            for slot in self.slots:
                if slot.seq_id >= self.native.capacity:
                    self._end(slot, error=exc)
            return
        for slot in self.slots:
            if slot.seq_id not in lost:
                continue
            running = slot.seq is not None and slot.seq.sampler is not None
            slot.cache = []
            if running:
                self._end(slot, error=InferenceError("the stream's KV cache could not be moved to a larger context"))

    def _shrink_timeout(self) -> float | None:
        """How long to wait idle before shrinking the KV cache (None: it is as small as it gets)."""
        grown = self.native.capacity > 1 and not self.native.settings.preallocate
        return self.shrink_idle_s if grown else None

    def _shrink_locked(self) -> None:
        """Shrink the KV cache to one slot holding the most recently used prefix (as slot 0)."""
        recent = max((slot for slot in self.slots if slot.cache), key=lambda s: s.ended_at, default=None)
        try:
            moved = self.native.shrink(None if recent is None else recent.seq_id)
        except EdgeRunnerError as exc:  # the old context stays as it was
            log.warning("could not shrink the idle KV cache: %s", exc.message)
            return
        kept = recent.cache if recent is not None and moved else []
        for slot in self.slots:
            slot.cache = []
        self.slots[0].cache = kept

    def _slot_of(self, seq: Sequence) -> Slot:
        return next(slot for slot in self.slots if slot.seq is seq)

    def _prepare(self, seq: Sequence) -> None:
        """Reuse the slot's cached prefix, drop the rest of its KV, build the sampler."""
        slot = self._slot_of(seq)
        keep = min(common_prefix_len(slot.cache, seq.prompt), len(seq.prompt) - 1)
        keep = self.native.forget(slot.seq_id, keep)
        slot.cache = slot.cache[:keep]
        seq.pending = seq.prompt[keep:]
        seq.cached_tokens = keep
        self.stats.prompt_tokens += len(seq.prompt)
        self.stats.cached_tokens += keep
        try:
            seq.sampler = Sampler(self.native, seq.params)
        except RuntimeError as exc:
            self._end(slot, error=InvalidInput(str(exc)))

    def _step(self) -> None:
        """One llama_decode over every active sequence; then sample each one that has logits."""
        batch = self._batch
        batch.clear()
        wants: list[tuple[Slot, int]] = []
        for slot in self.slots:
            seq = slot.seq
            if seq is None:
                continue
            if seq.cancelled:
                self._end(slot, reason="cancelled")
            elif not seq.pending:
                wants.append((slot, batch.add(seq.last_token, len(slot.cache), slot.seq_id, True)))
                slot.cache.append(seq.last_token)
        for slot in self.slots:
            seq = slot.seq
            if seq is None or not seq.pending or batch.n >= batch.capacity:
                continue
            take = seq.pending[: batch.capacity - batch.n]
            seq.pending = seq.pending[len(take) :]
            last, index = False, -1
            for j, token in enumerate(take):
                last = not seq.pending and j == len(take) - 1
                index = batch.add(token, len(slot.cache), slot.seq_id, last)
                slot.cache.append(token)
            if last:
                wants.append((slot, index))
        if batch.n == 0:
            return
        self._decode(wants)

    def _decode(self, wants: list[tuple[Slot, int]]) -> None:
        try:
            self._batch.decode()
        except InferenceError as exc:
            for slot in self.slots:
                if slot.seq is not None:
                    self.native.forget(slot.seq_id, 0)
                    slot.cache = []
                    self._end(slot, error=exc)
            return
        self.stats.decode_calls += 1
        for slot, index in wants:
            seq = slot.seq
            if seq is not None and seq.sampler is not None:
                try:
                    token = seq.sampler.sample(self.native.ctx, index)
                except GrammarDeadEnd as exc:  # the schema cannot be met: an error, never a crash
                    self._end(slot, error=exc)
                    continue
                self._on_token(slot, seq, token)

    def _on_token(self, slot: Slot, seq: Sequence, token: int) -> None:
        seq.completion_tokens += 1
        self.stats.generated_tokens += 1
        if seq.completion_tokens == 1:
            seq.first_token_at = time.monotonic()
            ttft = seq.first_token_at - seq.submitted_at
            self.stats.ttft_total_s += ttft
            self.stats.first_tokens += 1
            if self.on_first_token is not None:
                self.on_first_token(ttft)
        if self.native.is_eog(token) and not seq.params.ignore_eos:
            seq.completion_tokens -= 1  # the end marker is not part of the completion text
            self._end(slot, reason="stop")
            return
        if seq.sampler is not None and seq.sampler.last_logprobs is not None:
            value, top = seq.sampler.last_logprobs
            piece = self.native.piece
            seq.logprobs.append(TokenLogprob(piece(token), value, tuple((piece(i), v) for i, v in top)))
        text = seq.assembler.feed(self.native.piece(token))
        if seq.assembler.stopped:
            self._end(slot, reason="stop", text=text)
        elif seq.completion_tokens >= seq.params.max_tokens or len(slot.cache) + 1 >= self.max_seq_len:
            self._end(slot, reason="length", text=text)
        else:
            seq.last_token = token
            seq.emit(text)

    def _end(self, slot: Slot, reason: str = "stop", text: str = "", error: EdgeRunnerError | None = None) -> None:
        """Finish the slot's sequence and free the slot (its KV cache stays for prefix reuse)."""
        seq = slot.seq
        if seq is None:
            return
        with self._cond:  # free the slot first: once a client has its last chunk, the slot is free
            slot.seq = None
            slot.ended_at = time.monotonic()
            self._inflight -= 1
        if error is not None:
            seq.fail(error)
            return
        if self.on_token_time is not None and seq.completion_tokens > 1 and seq.first_token_at is not None:
            self.on_token_time((time.monotonic() - seq.first_token_at) / (seq.completion_tokens - 1))
        seq.finish(reason, text + seq.assembler.flush())

    def _fail_all(self, error: EdgeRunnerError) -> None:
        for slot in self.slots:
            self._end(slot, error=error)
        with self._cond:
            while self._waiting:
                seq = self._waiting.popleft()
                seq.fail(error)
                self._inflight -= 1
