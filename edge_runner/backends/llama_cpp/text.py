"""Turning token bytes into streamable text: UTF-8 reassembly and stop strings.

Tokens can split a UTF-8 character, and a stop string can straddle tokens. ``TextAssembler`` holds
back exactly the bytes and characters that might still change meaning, and releases the rest.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Incremental detokenizer for one sequence, honouring OpenAI ``stop`` strings."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit ('' if none).

        After a stop string is seen, ``stopped`` is True and the text before it is returned.
        """
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        if not self._stop:
            self._held = ""
            return text
        cut = self._first_stop(text)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_stop_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Whatever is held back when the sequence ends without a stop string."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _first_stop(self, text: str) -> int | None:
        positions = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(positions) if positions else None

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Number of leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
