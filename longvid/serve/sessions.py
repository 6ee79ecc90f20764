"""Server-side video sessions: compressed caches kept between questions, within a memory budget and an idle timeout.

A session is a `longvid.VideoSession` (its KV cache, the encoded video it was built from) plus what the API shows
about it. The store evicts the least recently used sessions when a new one would exceed ``memory_bytes``, and
drops sessions idle for longer than ``idle_seconds``; asking about an evicted or expired session says which.

    store = SessionStore(memory_bytes=4 << 30, idle_seconds=600)
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field

import torch

from longvid.engine.cache import kv_bytes


def tensor_bytes(*tensors) -> int:
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


def session_bytes(session) -> int:
    """What a session holds: its KV cache, the encoded video's tokens and extras, and the video block."""
    encoded = session.encoded
    tokens, block = encoded.tokens, encoded.block
    held = tensor_bytes(tokens.embeds, tokens.positions, tokens.thw, tokens.time, tokens.merged,
                        *tokens.extras.values())
    if block.embeds.data_ptr() != tokens.embeds.data_ptr():
        held += tensor_bytes(block.embeds)
    return kv_bytes(session.cache) + held


@dataclass
class Entry:
    """A session and what the API reports about it."""

    id: str
    session: object
    method: str
    video: str
    created: float
    last_used: float
    kv_bytes: int
    bytes: int
    questions: int = 0
    meta: dict = field(default_factory=dict)

    def describe(self) -> dict:
        s = self.session
        return {"id": self.id, "object": "session", "method": self.method, "video": self.video,
                "created": int(self.created), "last_used": int(self.last_used), "kv_bytes": self.kv_bytes,
                "bytes": self.bytes, "visual_tokens": s.visual_tokens, "kept_tokens": s.kept_visual(),
                "frames": s.frames[1], "questions": self.questions}


class SessionGone(KeyError):
    """Unknown, evicted or expired; ``reason`` says which, for the error message."""

    def __init__(self, session_id: str, reason: str):
        super().__init__(session_id)
        self.session_id, self.reason = session_id, reason


class SessionStore:
    """Sessions by id, least recently used first; thread-safe (the worker mutates, handlers read)."""

    def __init__(self, memory_bytes: int, idle_seconds: float, clock=time.monotonic, wall=time.time,
                 prefix: str = "sess-"):
        self.memory_bytes, self.idle_seconds = memory_bytes, idle_seconds
        self.entries: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self.gone: collections.OrderedDict[str, str] = collections.OrderedDict()  # id -> why, the last 1000
        self.lock = threading.RLock()
        self.clock, self.wall, self.prefix = clock, wall, prefix

    @property
    def used_bytes(self) -> int:
        with self.lock:
            return sum(e.bytes for e in self.entries.values())

    def add(self, session, method: str, video: str) -> Entry:
        """Keep ``session``; evict least recently used sessions until the budget holds. Raises ValueError if the
        session alone exceeds the budget."""
        size, now = session_bytes(session), self.clock()
        if size > self.memory_bytes:
            raise ValueError(f"the session needs {size / 2**20:.1f} MiB, more than the server's session memory "
                             f"({self.memory_bytes / 2**20:.1f} MiB); use a smaller keep or budget, fewer frames, or "
                             "ask one-shot through /v1/chat/completions")
        entry = Entry(self.prefix + secrets.token_hex(12), session, method, video, self.wall(), now,
                      kv_bytes(session.cache), size)
        with self.lock:
            self.sweep()
            while self.entries and self.used_bytes + size > self.memory_bytes:
                old, _ = self.entries.popitem(last=False)
                self._forget(old, "evicted to make room within the server's session memory")
            self.entries[entry.id] = entry
        return entry

    def get(self, session_id: str) -> Entry:
        """The session, marked as used now; raises `SessionGone`."""
        with self.lock:
            self.sweep()
            entry = self.entries.get(session_id)
            if entry is None:
                raise SessionGone(session_id, self.gone.get(session_id, "unknown"))
            entry.last_used = self.clock()
            self.entries.move_to_end(session_id)
            return entry

    def update(self, entry: Entry) -> None:
        """Re-measure a session after it grew (streamed frames); evict others if the budget requires. Raises
        ValueError (and drops the session) if it alone has outgrown the budget."""
        size = session_bytes(entry.session)
        with self.lock:
            entry.bytes, entry.kv_bytes = size, kv_bytes(entry.session.cache)
            if entry.id not in self.entries:  # deleted while it was growing
                return
            if size > self.memory_bytes:
                budget = f"{self.memory_bytes / 2**20:.1f} MiB"
                self.entries.pop(entry.id)
                self._forget(entry.id, f"dropped: its frames grew it to {size / 2**20:.1f} MiB, more than the "
                                       f"server's session memory ({budget})")
                raise ValueError(f"these frames grew the session to {size / 2**20:.1f} MiB, more than the server's "
                                 f"session memory ({budget}), so it was dropped; create it again with a smaller keep "
                                 "or budget (a press holds the cache at its budget), or send fewer frames")
            for other in [sid for sid in self.entries if sid != entry.id]:
                if self.used_bytes <= self.memory_bytes:
                    break
                self.entries.pop(other)
                self._forget(other, "evicted to make room within the server's session memory")

    def drop(self, session_id: str, why: str) -> None:
        """Forget a session that can no longer answer, saying why to whoever asks for it next."""
        with self.lock:
            if self.entries.pop(session_id, None) is not None:
                self._forget(session_id, why)

    def delete(self, session_id: str) -> Entry:
        with self.lock:
            entry = self.entries.pop(session_id, None)
            if entry is None:
                raise SessionGone(session_id, self.gone.get(session_id, "unknown"))
            self._forget(session_id, "deleted")
            return entry

    def sweep(self) -> list[str]:
        """Drop sessions idle for longer than ``idle_seconds``; return their ids."""
        now, expired = self.clock(), []
        with self.lock:
            for sid, entry in list(self.entries.items()):
                if now - entry.last_used > self.idle_seconds:
                    self.entries.pop(sid)
                    self._forget(sid, f"expired after {self.idle_seconds:g} s without a request")
                    expired.append(sid)
        return expired

    def list(self) -> list[dict]:
        with self.lock:
            self.sweep()
            return [e.describe() for e in self.entries.values()]

    def clear(self) -> None:
        with self.lock:
            for sid in list(self.entries):
                self.entries.pop(sid)
                self._forget(sid, "closed when the server stopped")

    def _forget(self, session_id: str, why: str) -> None:
        self.gone[session_id] = why
        while len(self.gone) > 1000:
            self.gone.popitem(last=False)
