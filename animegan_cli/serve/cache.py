"""serve's result cache: encoded results by upload bytes and settings, LRU within a byte budget.

A key is the BLAKE2b of the upload's bytes together with everything else that decides the
answer: the checkpoint id, the pixel settings and the output format and quality. With
``similar`` (``--cache-similar MAXDIST``) an upload that misses may still take the result of
a cached one of the same settings and model-input shape whose dHash is within MAXDIST
bits: a perceptual cache, opt-in because that result is not the upload's own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from animegan_cli.pipeline.similar import hamming


@dataclass(frozen=True)
class CachedResult:
    """An encoded result as it is sent: its bytes, content type and file extension."""

    data: bytes
    media_type: str
    extension: str


@dataclass(frozen=True)
class _Entry:
    result: CachedResult
    group: Hashable | None  # (settings, model-input shape) look-alikes must share
    dhash: int | None


def cache_key(upload: bytes, checkpoint_id: str, settings: Mapping[str, object]) -> str:
    """BLAKE2b-256 of the upload's bytes, the checkpoint id and the settings that decide it."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(upload)
    digest.update(b"\0" + checkpoint_id.encode() + b"\0")
    digest.update(json.dumps(dict(settings), sort_keys=True).encode())
    return digest.hexdigest()


class ResultCache:
    """Thread-safe LRU of encoded results, bounded by the bytes they hold (0 = off)."""

    def __init__(self, max_bytes: int, similar: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.similar = similar
        self.bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResult | None:
        """The result cached under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.result

    def find_similar(self, group: Hashable, dhash: int) -> CachedResult | None:
        """With ``similar`` set: the closest cached look-alike in ``group``, or None."""
        if self.similar is None:
            return None
        with self._lock:
            best: tuple[int, str] | None = None
            for key, entry in self._entries.items():
                if entry.group != group or entry.dhash is None:
                    continue
                distance = hamming(dhash, entry.dhash)
                if distance <= self.similar and (best is None or distance < best[0]):
                    best = (distance, key)
            if best is None:
                return None
            self._entries.move_to_end(best[1])
            return self._entries[best[1]].result

    def put(
        self,
        key: str,
        result: CachedResult,
        group: Hashable | None = None,
        dhash: int | None = None,
    ) -> None:
        """Keep a result, dropping the least recently used ones beyond the budget."""
        size = len(result.data)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= len(old.result.data)
            self._entries[key] = _Entry(result, group, dhash)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= len(evicted.result.data)
