"""Request body helpers: multipart/form-data parsing and form-or-JSON field access."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from tests.fake_cvat.web import Ctx, bad_request


@dataclass(frozen=True)
class Part:
    """One multipart part; ``filename`` is None for plain fields."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def basename(self) -> str:
        """The file name without the client's directory (the SDK sends absolute paths)."""
        return posixpath.basename((self.filename or "").replace("\\", "/"))


_PARAM = re.compile(r';\s*([a-zA-Z0-9_*-]+)="?((?:[^"\\]|\\.)*)"?')


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into parts (binary safe)."""
    found = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not found:
        raise bad_request({"detail": "Multipart form parse error - Invalid boundary in multipart: None"})
    delimiter = b"--" + found.group(1).encode("latin-1")
    parts: list[Part] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        params = dict(_PARAM.findall(headers.get("content-disposition", "")))
        parts.append(Part(params.get("name", ""), params.get("filename"), headers.get("content-type"), data))
    return parts


def form_fields(ctx: Ctx) -> dict[str, list]:
    """Fields of a JSON, urlencoded or multipart body as ``name -> [values]``.

    ``name[0]``-style keys (how multipart encodes lists) are merged into ``name``.
    """
    content_type = (ctx.headers.get("Content-Type") or "").lower()
    fields: dict[str, list] = {}
    if content_type.startswith("multipart/"):
        for part in parse_multipart(ctx.body, ctx.headers.get("Content-Type")):
            if part.filename is None:
                fields.setdefault(re.sub(r"\[\d+\]$", "", part.name), []).append(part.data.decode("utf-8", "replace"))
        return fields
    if content_type.startswith("application/x-www-form-urlencoded"):
        for key, values in parse_qs(ctx.body.decode("utf-8", "replace"), keep_blank_values=True).items():
            fields.setdefault(re.sub(r"\[\d+\]$", "", key), []).extend(values)
        return fields
    data = ctx.json(required=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise bad_request({"non_field_errors": ["Invalid data. Expected a dictionary."]})
    for key, value in data.items():
        fields[key] = value if isinstance(value, list) else [value]
    return fields


def single(fields: dict[str, list], name: str):
    """The one value of a field, or None."""
    values = fields.get(name)
    return values[-1] if values else None


def as_json_value(raw):
    """A field that may arrive JSON-encoded inside a form."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw
