"""The one exception of the label store."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """A store operation failed: the store cannot be opened (bad URL or path, unreachable
    server, wrong schema version), an object is missing, or a write would overwrite or
    contradict what is stored. The message names the object (store URL with the password
    hidden, dataset, run, sample URI, CVAT task or job) and never contains credentials."""
