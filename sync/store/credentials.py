"""Keeping credentials out of the store: URL userinfo stripped, secret-looking keys refused.

The store records where data came from (CVAT server URLs, model ids, run parameters) but
never how to log in there. `strip_credentials` removes ``user:password@`` and the query
string (where tokens travel) from URLs; `check_no_secrets` refuses JSON parameters whose keys
name a secret and strips credentials from URL-looking string values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sync.store.errors import StoreError

__all__ = ["check_no_secrets", "has_credentials", "strip_credentials"]

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "bearer",
        "privatekey",
    }
)
_SPLIT = re.compile(r"[^a-z0-9]+")


def strip_credentials(url: str) -> str:
    """``url`` without userinfo, query string or fragment, and without a trailing ``/``.

    ``https://alice:s3cret@cvat.example.com:8080/?token=x`` becomes
    ``https://cvat.example.com:8080``. Strings that are not ``scheme://`` URLs are returned
    unchanged (a Hugging Face model id such as ``IDEA-Research/grounding-dino-tiny`` or a
    local path).
    """
    if not isinstance(url, str):
        raise StoreError(f"a URL must be a string, got {type(url).__name__}")
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError as err:
        # The message of urllib's error may quote the netloc (with its password): do not chain.
        raise StoreError(
            f"not a valid URL ({type(err).__name__}); it is not shown since it may hold credentials"
        ) from None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def has_credentials(url: str) -> bool:
    """True when ``url`` is a ``scheme://`` URL with ``user@`` or ``user:password@`` in it."""
    if not isinstance(url, str) or "://" not in url:
        return False
    netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return "@" in netloc


def _is_secret_key(key: str) -> bool:
    words = [w for w in _SPLIT.split(key.lower()) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    return any(joined.endswith(tail) for tail in ("apikey", "accesskey", "secretkey", "privatekey"))


def check_no_secrets(value: Any, where: str) -> Any:
    """A copy of the JSON-like ``value`` fit for the store.

    Mapping keys that name a secret (``password``, ``hf_token``, ``api_key``, ``Authorization``
    …; ``max_tokens`` is fine) raise `StoreError` naming the key path, never the value.
    String values that are URLs lose their credentials (`strip_credentials`).
    """
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StoreError(f"{where}: keys must be strings, got {key!r}")
            path = f"{where}[{key!r}]"
            if _is_secret_key(key):
                raise StoreError(f"{path} looks like a credential; the store never keeps credentials")
            result[key] = check_no_secrets(item, path)
        return result
    if isinstance(value, (list, tuple)):
        return [check_no_secrets(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str) and "://" in value and "@" in value:
        return strip_credentials(value)
    return value
