"""The frame-embedding cache every promptable segmenter shares: embed a frame once, prompt it
many times.

An interactive annotator clicks several times on one frame, and Grounded-SAM decodes every
box of a frame against one embedding; the image encoder is the costly part, so its result is
kept in a small LRU keyed by the frame's content (pixels and shape), not by object identity:
the same frame decoded again from a new request hits the cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

__all__ = ["EmbeddingCache", "image_hash"]

E = TypeVar("E")


def image_hash(image: np.ndarray) -> str:
    """Content hash of a decoded image (pixels and shape)."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(repr(image.shape).encode())
    return digest.hexdigest()


class EmbeddingCache(Generic[E]):
    """A thread-safe LRU of at most ``size`` embeddings keyed by `image_hash` (``size`` 0:
    nothing is kept, every frame is embedded afresh, as benchmarks of the encoder want)."""

    def __init__(self, size: int = 32) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache size must be an integer >= 0, got {size!r}")
        self.size = size
        self._entries: OrderedDict[str, E] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, image: np.ndarray, compute: Callable[[str], E]) -> E:
        """The embedding of ``image``: the cached one, else ``compute(hash)`` (kept, the least
        recently used entry evicted). ``compute`` runs under the cache's lock, so concurrent
        requests for one new frame run the encoder once. `get_many` of one frame."""
        return self.get_many([image], lambda _frames, keys: [compute(keys[0])])[0]

    def get_many(
        self, images: Sequence[np.ndarray], compute: Callable[[list[np.ndarray], list[str]], list[E]]
    ) -> list[E]:
        """The embedding of each of ``images``, in order: cached ones as `get` serves them, the
        others from one ``compute(frames, hashes)`` call over the missing frames (each distinct
        frame once), which must return one embedding per frame; those are kept as `get` keeps
        them. ``compute`` runs under the cache's lock, as in `get`."""
        keys = [image_hash(image) for image in images]
        with self._lock:
            found: dict[str, E] = {}
            missing: dict[str, np.ndarray] = {}
            for key, image in zip(keys, images, strict=True):
                hit = self._entries.get(key)
                if hit is not None:
                    self._entries.move_to_end(key)
                    found[key] = hit
                elif key not in found:
                    missing.setdefault(key, image)
            if missing:
                computed = compute(list(missing.values()), list(missing))
                for key, value in zip(missing, computed, strict=True):
                    found[key] = value
                    if self.size:
                        self._entries[key] = value
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            return [found[key] for key in keys]

    def __contains__(self, image: object) -> bool:
        """Whether ``image`` (an array) is cached; no recency update."""
        if not isinstance(image, np.ndarray):
            return False
        key = image_hash(image)
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
