"""Model weights fetched at image build time from pinned sources and verified by checksum.

Functions never download at request time: a container image runs this once while it is built
(Nuclio ``postCopy`` directive, ``deploy/docker/Dockerfile``) and then serves with
``HF_HUB_OFFLINE=1``::

    python -m serverless.weights fetch --dest /opt/weights \\
        [--gdino IDEA-Research/grounding-dino-tiny@<40-hex commit>] [--sam vit_h|vit_l|vit_b] \\
        [--hf NAME=OWNER/REPO@<40-hex commit> ...] [--file NAME=URL#sha256=<64 hex> ...] \\
        [--manifest weights.json] [--strict] [--sam-url MIRROR_URL] [--hf-cache DIR]
    python -m serverless.weights pin --gdino REPO@REV [--from DIR] [--out weights.json]
    python -m serverless.weights verify --dest /opt/weights

Layout written under ``--dest``:

- ``grounding-dino/``: the Hugging Face snapshot (``*.json``, ``*.txt``, ``*.safetensors``) at a
  **commit sha** (branch names are refused), the value for ``AUTOLABEL_GDINO_MODEL``.
- ``sam/sam_<type>.pth``: the public segment-anything checkpoint of ``serverless.models.sam.
  SAM_CHECKPOINTS`` (URL and MD5), the value for ``AUTOLABEL_SAM_CHECKPOINT``.
- ``NAME/``: a transformers snapshot of ``--hf NAME=OWNER/REPO@SHA`` (OWLv2, SAM 2.1, SAM 3,
  CLIP, a YOLO-World text encoder ...), verified like Grounding DINO's.
- ``NAME/<file>``: a checkpoint of ``--file NAME=URL#sha256=HEX`` (an ultralytics ``.pt``); the
  sha256 is mandatory.
- ``weights.lock.json``: what was fetched (sources, sizes, sha256 of every file), read by
  ``verify``.

Verification: SAM checkpoints must match the MD5 of the table. Grounding DINO files must match
the sha256 (and size) of the manifest entry for their repository and revision when the manifest
has one; a file the manifest does not list is accepted with a warning, or refused with
``--strict``. `BUILTIN_MANIFEST` holds the pinned default; maintainers record complete
manifests online with ``pin`` (which hashes every file of a snapshot) and pass them with
``--manifest``. A failed fetch leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from serverless.models.sam import SAM_CHECKPOINTS

__all__ = [
    "BUILTIN_MANIFEST",
    "DEFAULT_GDINO",
    "GDINO_DIR",
    "GDINO_PATTERNS",
    "LOCK_FILE",
    "FileSource",
    "GdinoSource",
    "WeightsError",
    "fetch",
    "fetch_file",
    "fetch_grounding_dino",
    "fetch_pretrained",
    "file_sha256",
    "file_target",
    "fetch_sam",
    "load_manifest",
    "main",
    "pin_grounding_dino",
    "sam_checkpoint_path",
    "verify",
]

GDINO_DIR = "grounding-dino"
"""Sub-directory of ``--dest`` holding the Grounding DINO snapshot."""

LOCK_FILE = "weights.lock.json"
"""File under ``--dest`` recording what was fetched."""

GDINO_PATTERNS = ("*.json", "*.txt", "*.safetensors", "*.model")
"""Files of a snapshot that transformers needs (config, tokenizer, processor, safetensors
weights); the duplicate ``pytorch_model.bin`` and the README are left out."""

_SHA = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """Weights could not be fetched or failed verification; the message names the file or
    source and what was expected."""


@dataclass(frozen=True)
class GdinoSource:
    """A Hugging Face model repository at one commit."""

    repo_id: str
    revision: str

    @classmethod
    def parse(cls, text: str, option: str = "--gdino") -> GdinoSource:
        """``REPO@SHA``; a bare ``REPO`` is accepted only for the pinned default repository.
        ``option`` names the option in messages (``--gdino``, ``--hf NAME``)."""
        repo_id, sep, revision = text.strip().partition("@")
        if not repo_id or repo_id.count("/") != 1:
            raise WeightsError(f"{option} must be OWNER/NAME@<commit sha>, got {text!r}")
        if not sep:
            if repo_id != DEFAULT_GDINO.repo_id:
                raise WeightsError(f"{option} {repo_id} needs a pinned revision: {repo_id}@<40-hex commit sha>")
            revision = DEFAULT_GDINO.revision
        return cls(repo_id, revision)

    def check_pinned(self) -> None:
        """Refuse branch or tag names: only a full commit sha pins a snapshot."""
        if not _SHA.match(self.revision):
            raise WeightsError(
                f"{self.repo_id}: revision {self.revision!r} is not a 40-hex commit sha; "
                "branches and tags move, so they are not accepted for image builds "
                "(run `python -m serverless.weights pin` online to resolve one)"
            )

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


DEFAULT_GDINO = GdinoSource("IDEA-Research/grounding-dino-tiny", "a2bb814dd30d776dcf7e30523b00659f4f141c71")
"""The pinned default. The revision and the ``model.safetensors`` digest below are the values
published for this repository by several independent projects; they were not re-checked
against the hub from this machine (no network here), see docs/deploy.md."""

BUILTIN_MANIFEST: dict[str, Any] = {
    "format": 1,
    "grounding_dino": [
        {
            "repo_id": DEFAULT_GDINO.repo_id,
            "revision": DEFAULT_GDINO.revision,
            "files": {
                "model.safetensors": {
                    "sha256": "1a2412ef99bd74bcd3c2a246fa1e48581f8889a1300c9051974741314fc042f3",
                    "size": 689359096,
                },
            },
        }
    ],
}
"""Known digests. Only ``model.safetensors`` is pinned for the default; the small JSON and text
files are accepted unlisted unless ``--strict`` (record them with ``pin`` and ``--manifest``)."""


# --------------------------------------------------------------------------- helpers


def _hash_stream(source: BinaryIO, target: BinaryIO | None, algorithms: Sequence[str]) -> tuple[dict[str, str], int]:
    digests = {name: hashlib.new(name) for name in algorithms}
    size = 0
    while chunk := source.read(_CHUNK):
        for digest in digests.values():
            digest.update(chunk)
        if target is not None:
            target.write(chunk)
        size += len(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}, size


def _file_digest(path: Path, algorithm: str = "sha256") -> tuple[str, int]:
    with path.open("rb") as handle:
        digests, size = _hash_stream(handle, None, [algorithm])
    return digests[algorithm], size


def file_sha256(path: str | os.PathLike[str]) -> str:
    """``"sha256:<hex>"`` of a file's bytes: the one content hash of a file (a pre-label run's
    samples and its ``model_revision``, imports, exports, rendered checkpoints)."""
    return "sha256:" + _file_digest(Path(path))[0]


def sam_checkpoint_path(dest: str | os.PathLike[str], model_type: str) -> Path:
    """Where `fetch_sam` puts a checkpoint: ``<dest>/sam/sam_<model_type>.pth``."""
    return Path(dest) / "sam" / f"sam_{model_type}.pth"


def load_manifest(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A manifest from a JSON file written by ``pin`` (None: `BUILTIN_MANIFEST`)."""
    if path is None:
        return BUILTIN_MANIFEST
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: cannot read manifest: {err}") from err
    if not isinstance(data, dict) or data.get("format") != 1:
        raise WeightsError(f'{path}: not a weights manifest (expected "format": 1)')
    entries = data.get("grounding_dino")
    if not isinstance(entries, list):
        raise WeightsError(f'{path}: "grounding_dino" must be a list of entries')
    for index, entry in enumerate(entries):
        files = entry.get("files") if isinstance(entry, dict) else None
        if (
            not isinstance(files, dict)
            or not isinstance(entry.get("repo_id"), str)
            or not isinstance(entry.get("revision"), str)
        ) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
            raise WeightsError(
                f"{path}: grounding_dino[{index}] needs repo_id, revision and files {{name: {{sha256, size?}}}}"
            )
    return data


def _manifest_files(manifest: Mapping[str, Any], source: GdinoSource) -> dict[str, dict[str, Any]] | None:
    for entry in manifest.get("grounding_dino", []):
        if entry.get("repo_id") == source.repo_id and entry.get("revision") == source.revision:
            return dict(entry["files"])
    return None


def _replace_dir(partial: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


# --------------------------------------------------------------------------- Grounding DINO


def _snapshot(source: GdinoSource, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                source.repo_id,
                revision=source.revision,
                cache_dir=str(cache_dir),
                allow_patterns=list(GDINO_PATTERNS),
            )
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot download {source}: {first}") from err


def _snapshot_files(root: Path) -> list[Path]:
    """Files of a snapshot matching `GDINO_PATTERNS` (as ``allow_patterns`` filters them), in
    name order; huggingface_hub's own ``.cache`` bookkeeping is skipped."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and ".cache" not in path.relative_to(root).parts
        and any(fnmatch.fnmatch(path.relative_to(root).as_posix(), pattern) for pattern in GDINO_PATTERNS)
    )


def fetch_grounding_dino(
    dest: str | os.PathLike[str],
    source: GdinoSource = DEFAULT_GDINO,
    *,
    manifest: Mapping[str, Any] = BUILTIN_MANIFEST,
    strict: bool = False,
    hf_cache: str | os.PathLike[str] | None = None,
    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr),
    subdir: str = GDINO_DIR,
) -> dict[str, Any]:
    """Download ``source`` into ``<dest>/<subdir>`` (``grounding-dino``; any transformers
    snapshot: `fetch_pretrained`) and verify it against ``manifest``.

    ``hf_cache`` is a Hugging Face cache directory to download through (and to reuse; it is
    kept); by default a temporary cache under ``dest`` is used and removed. Returns the lock
    entry ``{repo_id, revision, files: {name: {sha256, size}}}``.
    """
    source.check_pinned()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    expected = _manifest_files(manifest, source)
    if expected is None:
        if strict:
            raise WeightsError(f"{source}: no manifest entry for this repository and revision (--strict)")
        warn(f"{source}: no manifest entry; file digests are recorded but not checked")
        expected = {}

    partial = dest / f".{subdir}.partial"
    own_cache = hf_cache is None
    cache = Path(tempfile.mkdtemp(prefix=".hf-cache-", dir=dest)) if own_cache else Path(hf_cache)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        snapshot = _snapshot(source, cache)
        files: dict[str, dict[str, Any]] = {}
        for path in _snapshot_files(snapshot):
            name = path.relative_to(snapshot).as_posix()
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as src, target.open("wb") as dst:
                digests, size = _hash_stream(src, dst, ["sha256"])
            want = expected.get(name)
            if want is None:
                if strict:
                    raise WeightsError(f"{source}: {name} is not in the manifest (--strict)")
                if expected:
                    warn(f"{source}: {name} is not in the manifest; accepted unchecked")
            else:
                if digests["sha256"] != want["sha256"]:
                    raise WeightsError(
                        f"{source}: {name} has sha256 {digests['sha256']}, the manifest expects {want['sha256']}"
                    )
                if "size" in want and int(want["size"]) != size:
                    raise WeightsError(f"{source}: {name} has {size} bytes, the manifest expects {want['size']}")
            files[name] = {"sha256": digests["sha256"], "size": size}
        missing = sorted(set(expected) - set(files))
        if missing:
            raise WeightsError(f"{source}: the snapshot lacks files listed in the manifest: {missing}")
        if "config.json" not in files:
            raise WeightsError(f"{source}: the snapshot has no config.json; is it a transformers model?")
        _replace_dir(partial, dest / subdir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return {"repo_id": source.repo_id, "revision": source.revision, "files": files}


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_name(name: str, option: str) -> str:
    if not _NAME.match(name) or name in (GDINO_DIR, "sam") or name.startswith("."):
        raise WeightsError(
            f"{option}: {name!r} is not a usable directory name (lower-case letters, digits, '.', '_', '-'; "
            f"not {GDINO_DIR!r} or 'sam', which --gdino and --sam use)"
        )
    return name


def parse_pair(text: str, option: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--hf`` / ``--file``, with NAME checked as a directory name."""
    name, sep, value = text.strip().partition("=")
    if not sep or not value.strip():
        raise WeightsError(f"{option} must be NAME=VALUE, got {text!r}")
    return _check_name(name.strip(), option), value.strip()


def fetch_pretrained(
    dest: str | os.PathLike[str],
    name: str,
    source: GdinoSource,
    *,
    manifest: Mapping[str, Any] = BUILTIN_MANIFEST,
    strict: bool = False,
    hf_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Any transformers model (OWLv2, SAM 2.1, SAM 3, CLIP, ...) at a commit sha into
    ``<dest>/<name>/``, verified exactly as Grounding DINO's snapshot (`fetch_grounding_dino`)."""
    return fetch_grounding_dino(
        dest, source, manifest=manifest, strict=strict, hf_cache=hf_cache, subdir=_check_name(name, "--hf")
    )


@dataclass(frozen=True)
class FileSource:
    """One checkpoint file at a URL with its sha256: ``URL#sha256=<64 hex>``."""

    url: str
    sha256: str

    @classmethod
    def parse(cls, text: str) -> FileSource:
        url, sep, fragment = text.strip().rpartition("#sha256=")
        digest = fragment.strip().lower()
        if not sep or not url or not _SHA256.match(digest):
            raise WeightsError(f"--file needs URL#sha256=<64 hex digits> (the checksum is mandatory), got {text!r}")
        if not url.startswith(("https://", "http://", "file://")):
            raise WeightsError(f"--file URL must be https://, http:// or file://, got {url!r}")
        return cls(url, digest)

    @property
    def basename(self) -> str:
        from urllib.parse import unquote, urlparse

        base = Path(unquote(urlparse(self.url).path)).name
        if not base or base.startswith("."):
            raise WeightsError(f"--file URL {self.url!r} does not end in a file name")
        return base


def file_target(dest: str | os.PathLike[str], name: str, source: FileSource) -> Path:
    """Where `fetch_file` puts a checkpoint: ``<dest>/<name>/<file name of the URL>``."""
    return Path(dest) / name / source.basename


def fetch_file(dest: str | os.PathLike[str], name: str, source: FileSource) -> dict[str, Any]:
    """Download one checkpoint to `file_target` and check its sha256 (an existing file with the
    right digest is kept). Returns the lock entry ``{url, sha256, size, file}``."""
    target = file_target(dest, _check_name(name, "--file"), source)
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = {"url": source.url, "sha256": source.sha256, "file": target.name}
    if target.is_file():
        digest, size = _file_digest(target)
        if digest == source.sha256:
            return entry | {"size": size}
    partial = target.with_name(f".{target.name}.partial")
    try:
        with _open_url(source.url) as response, partial.open("wb") as out:
            digests, size = _hash_stream(response, out, ["sha256"])
        if digests["sha256"] != source.sha256:
            raise WeightsError(f"{source.url} has sha256 {digests['sha256']}, expected {source.sha256}")
        partial.replace(target)
    except OSError as err:
        raise WeightsError(f"cannot download {source.url}: {err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return entry | {"size": size}


def pin_grounding_dino(
    source: GdinoSource,
    *,
    from_dir: str | os.PathLike[str] | None = None,
    hf_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A manifest for ``source``: sha256 and size of every snapshot file.

    A revision that is not a commit sha is resolved on the hub first (online). With
    ``from_dir`` the files are read from a local copy of that revision instead of downloaded.
    """
    if not _SHA.match(source.revision):
        if from_dir is not None:
            raise WeightsError(f"{source}: --from needs the commit sha the directory was taken at")
        from huggingface_hub import HfApi

        try:
            sha = HfApi().model_info(source.repo_id, revision=source.revision).sha
        except (OSError, ValueError) as err:
            raise WeightsError(f"cannot resolve {source} on the hub: {err}") from err
        source = GdinoSource(source.repo_id, str(sha))
    if from_dir is not None:
        root = Path(from_dir)
        if not root.is_dir():
            raise WeightsError(f"--from {root}: not a directory")
        entries = {
            p.relative_to(root).as_posix(): dict(zip(("sha256", "size"), _file_digest(p)))
            for p in _snapshot_files(root)
        }
    else:
        with tempfile.TemporaryDirectory(prefix="hf-pin-") as tmp:
            snapshot = _snapshot(source, Path(hf_cache) if hf_cache else Path(tmp))
            entries = {
                p.relative_to(snapshot).as_posix(): dict(zip(("sha256", "size"), _file_digest(p)))
                for p in _snapshot_files(snapshot)
            }
    if "config.json" not in entries:
        raise WeightsError(f"{source}: no config.json among {sorted(entries)}")
    return {
        "format": 1,
        "grounding_dino": [{"repo_id": source.repo_id, "revision": source.revision, "files": entries}],
    }


# --------------------------------------------------------------------------- SAM


def _open_url(url: str) -> BinaryIO:
    try:
        return urllib.request.urlopen(url, timeout=60)
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot download {url}: {err}") from err


def fetch_sam(
    dest: str | os.PathLike[str],
    model_type: str,
    *,
    url: str | None = None,
    checkpoints: Mapping[str, tuple[str, str]] = SAM_CHECKPOINTS,
) -> dict[str, Any]:
    """Download the SAM ``model_type`` checkpoint to `sam_checkpoint_path` and check its MD5.

    ``url`` replaces the table's URL (a mirror); the MD5 always comes from ``checkpoints``
    (`serverless.models.sam.SAM_CHECKPOINTS`). An existing file with the right MD5 is kept.
    Returns the lock entry ``{model_type, url, md5, sha256, size}``.
    """
    if model_type not in checkpoints:
        raise WeightsError(f"unknown SAM model type {model_type!r}; expected one of {sorted(checkpoints)}")
    table_url, md5 = checkpoints[model_type]
    url = url or table_url
    target = sam_checkpoint_path(dest, model_type)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        with target.open("rb") as handle:
            digests, size = _hash_stream(handle, None, ["md5", "sha256"])
        if digests["md5"] == md5:
            return {"model_type": model_type, "url": url, "md5": md5, "sha256": digests["sha256"], "size": size}
    partial = target.with_name(f".{target.name}.partial")
    try:
        with _open_url(url) as response, partial.open("wb") as out:
            digests, size = _hash_stream(response, out, ["md5", "sha256"])
        if digests["md5"] != md5:
            raise WeightsError(f"SAM {model_type} from {url} has MD5 {digests['md5']}, expected {md5}")
        partial.replace(target)
    except OSError as err:
        raise WeightsError(f"cannot download {url}: {err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return {"model_type": model_type, "url": url, "md5": md5, "sha256": digests["sha256"], "size": size}


# --------------------------------------------------------------------------- fetch / verify


def fetch(
    dest: str | os.PathLike[str],
    *,
    gdino: GdinoSource | None = DEFAULT_GDINO,
    sam: Iterable[str] = (),
    manifest: Mapping[str, Any] = BUILTIN_MANIFEST,
    strict: bool = False,
    sam_url: str | None = None,
    hf_cache: str | os.PathLike[str] | None = None,
    checkpoints: Mapping[str, tuple[str, str]] = SAM_CHECKPOINTS,
    pretrained: Mapping[str, GdinoSource] | None = None,
    files: Mapping[str, FileSource] | None = None,
) -> dict[str, Any]:
    """Fetch the asked-for weights into ``dest`` and write ``weights.lock.json``; returns it.

    ``pretrained``: directory name → transformers snapshot (`fetch_pretrained`); ``files``:
    directory name → checkpoint file (`fetch_file`). Records of earlier fetches into ``dest``
    (Grounding DINO, other SAM types, other names) are kept in the lock file. ``checkpoints``
    is the SAM table (URL, MD5) of `fetch_sam`."""
    dest = Path(dest)
    sam = list(dict.fromkeys(sam))
    if sam_url and len(sam) != 1:
        raise WeightsError("--sam-url names one file: give exactly one --sam type with it")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"--dest {dest}: cannot create: {err}") from err
    lock: dict[str, Any] = {"format": 1}
    if gdino is not None:
        lock["grounding_dino"] = fetch_grounding_dino(dest, gdino, manifest=manifest, strict=strict, hf_cache=hf_cache)
    if sam:
        lock["sam"] = [fetch_sam(dest, t, url=sam_url, checkpoints=checkpoints) for t in sam]
    if pretrained:
        lock["pretrained"] = {
            name: fetch_pretrained(dest, name, source, manifest=manifest, strict=strict, hf_cache=hf_cache)
            for name, source in pretrained.items()
        }
    if files:
        lock["files"] = {name: fetch_file(dest, name, source) for name, source in files.items()}
    previous = dest / LOCK_FILE
    if previous.is_file():
        try:
            old = json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if isinstance(old, dict):
            if "grounding_dino" not in lock and "grounding_dino" in old:
                lock["grounding_dino"] = old["grounding_dino"]
            fetched = {entry["model_type"] for entry in lock.get("sam", [])}
            kept = [e for e in old.get("sam", []) if isinstance(e, dict) and e.get("model_type") not in fetched]
            if kept:
                lock["sam"] = sorted([*kept, *lock.get("sam", [])], key=lambda entry: entry["model_type"])
            for key in ("pretrained", "files"):
                if isinstance(old.get(key), dict):
                    lock[key] = {**old[key], **lock.get(key, {})}
    try:
        (dest / LOCK_FILE).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as err:
        raise WeightsError(f"{dest / LOCK_FILE}: cannot write: {err}") from err
    return lock


def verify(dest: str | os.PathLike[str]) -> list[str]:
    """Re-hash every file recorded in ``<dest>/weights.lock.json``; returns the problems."""
    dest = Path(dest)
    try:
        lock = json.loads((dest / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{dest / LOCK_FILE}: cannot read: {err}") from err
    expected: list[tuple[Path, str]] = []
    gdino = lock.get("grounding_dino")
    if gdino:
        expected += [(dest / GDINO_DIR / name, info["sha256"]) for name, info in gdino["files"].items()]
    for entry in lock.get("sam", []):
        expected.append((sam_checkpoint_path(dest, entry["model_type"]), entry["sha256"]))
    for name, entry in (lock.get("pretrained") or {}).items():
        expected += [(dest / name / file, info["sha256"]) for file, info in entry["files"].items()]
    for name, entry in (lock.get("files") or {}).items():
        expected.append((dest / name / entry["file"], entry["sha256"]))
    problems = []
    for path, sha256 in expected:
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual, _ = _file_digest(path)
        if actual != sha256:
            problems.append(f"{path}: sha256 {actual}, expected {sha256}")
    return problems


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serverless.weights", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    fetch_cmd = commands.add_parser("fetch", help="download and verify weights (image build time)")
    fetch_cmd.add_argument("--dest", required=True, help="output directory, e.g. /opt/weights")
    fetch_cmd.add_argument(
        "--gdino",
        "--grounding-dino",
        dest="gdino",
        default=str(DEFAULT_GDINO),
        help=f"Hugging Face repository at a commit sha (default {DEFAULT_GDINO})",
    )
    fetch_cmd.add_argument("--no-gdino", action="store_true", help="do not fetch Grounding DINO")
    fetch_cmd.add_argument(
        "--sam", action="append", default=[], choices=sorted(SAM_CHECKPOINTS), help="SAM checkpoint type (repeatable)"
    )
    fetch_cmd.add_argument("--sam-url", help="mirror URL of the --sam checkpoint (the MD5 is still checked)")
    fetch_cmd.add_argument(
        "--hf", action="append", default=[], metavar="NAME=OWNER/REPO@SHA",
        help="a transformers snapshot at a commit sha into DEST/NAME (repeatable)",
    )
    fetch_cmd.add_argument(
        "--file", action="append", default=[], metavar="NAME=URL#sha256=HEX",
        help="one checkpoint file, its sha256 checked, into DEST/NAME/ (repeatable)",
    )
    fetch_cmd.add_argument("--manifest", help="manifest JSON written by `pin` (default: the built-in one)")
    fetch_cmd.add_argument("--strict", action="store_true", help="refuse files without a manifest digest")
    fetch_cmd.add_argument("--hf-cache", help="Hugging Face cache directory to download through (kept)")

    pin_cmd = commands.add_parser("pin", help="record sha256 digests of a snapshot (maintainers, online)")
    pin_cmd.add_argument(
        "--gdino",
        "--hf",
        dest="gdino",
        default=str(DEFAULT_GDINO),
        help="REPO@REVISION of any transformers model (a branch is resolved to its commit); the manifest serves "
        "--gdino and --hf alike",
    )
    pin_cmd.add_argument("--from", dest="from_dir", help="hash a local copy of the revision instead of downloading")
    pin_cmd.add_argument("--hf-cache", help="Hugging Face cache directory to download through")
    pin_cmd.add_argument("--out", help="write the manifest here (default: standard output)")

    verify_cmd = commands.add_parser("verify", help="re-hash the files recorded in weights.lock.json")
    verify_cmd.add_argument("--dest", required=True)
    return parser


def _pretrained_arg(text: str) -> tuple[str, GdinoSource]:
    name, value = parse_pair(text, "--hf")
    source = GdinoSource.parse(value, f"--hf {name}")
    source.check_pinned()
    return name, source


def args_names(values: Sequence[str]) -> list[str]:
    return [text.partition("=")[0].strip() for text in values]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m serverless.weights``; returns the exit code (2 on errors)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            lock = fetch(
                args.dest,
                gdino=None if args.no_gdino else GdinoSource.parse(args.gdino),
                sam=args.sam,
                manifest=load_manifest(args.manifest),
                strict=args.strict,
                sam_url=args.sam_url,
                hf_cache=args.hf_cache,
                pretrained=dict(_pretrained_arg(text) for text in args.hf),
                files={name: FileSource.parse(value) for name, value in (parse_pair(t, "--file") for t in args.file)},
            )
            parts = []
            if "grounding_dino" in lock:
                parts.append(
                    f"{Path(args.dest) / GDINO_DIR} ({lock['grounding_dino']['repo_id']}@{lock['grounding_dino']['revision'][:12]})"
                )
            parts += [str(sam_checkpoint_path(args.dest, entry["model_type"])) for entry in lock.get("sam", [])]
            parts += [str(Path(args.dest) / name) for name in args_names(args.hf)]
            parts += [str(Path(args.dest) / name) for name in args_names(args.file)]
            print("fetched: " + ", ".join(parts) if parts else "nothing to fetch")
        elif args.command == "pin":
            manifest = pin_grounding_dino(GdinoSource.parse(args.gdino), from_dir=args.from_dir, hf_cache=args.hf_cache)
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            if args.out:
                Path(args.out).write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
        else:
            problems = verify(args.dest)
            if problems:
                for problem in problems:
                    print(f"error: {problem}", file=sys.stderr)
                return 2
            print(f"{args.dest}: all recorded weights match")
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
