"""`QaError`, the one exception of the QA package (`sync.qa`).

A `ValueError`: what the caller asked for cannot be done with what the store holds (no
embeddings yet, embeddings of another model, an empty dataset, a bad argument). The message is
one line naming the culprit and, where there is one, the command that fixes it; the CLI prints
it as is (exit code 2).
"""

from __future__ import annotations

__all__ = ["QaError"]


class QaError(ValueError):
    """A QA request that cannot be served; the message says why and what to run."""
