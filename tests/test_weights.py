"""serverless.weights: build-time weight fetching with pinned revisions and checksums, offline.

Grounding DINO goes through the real ``huggingface_hub.snapshot_download`` in offline mode,
reading a Hugging Face cache laid out as the hub client writes it (filled with the tiny model);
SAM checkpoints come from ``file://`` URLs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serverless import weights
from serverless.models.sam import SAM_CHECKPOINTS
from serverless.weights import (
    BUILTIN_MANIFEST,
    DEFAULT_GDINO,
    GDINO_DIR,
    LOCK_FILE,
    GdinoSource,
    WeightsError,
    fetch,
    fetch_grounding_dino,
    fetch_sam,
    main,
    pin_grounding_dino,
    sam_checkpoint_path,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent
OTHER_REVISION = "0123456789abcdef0123456789abcdef01234567"


def make_hf_cache(cache: Path, source: GdinoSource, files_from: Path) -> Path:
    """A Hugging Face cache holding ``source`` with the files of ``files_from`` (hub layout)."""
    owner, name = source.repo_id.split("/")
    snapshot = cache / f"models--{owner}--{name}" / "snapshots" / source.revision
    snapshot.mkdir(parents=True)
    for path in files_from.iterdir():
        if path.is_file():
            shutil.copy2(path, snapshot / path.name)
    (snapshot / "README.md").write_text("model card: not one of the fetched patterns\n")
    return snapshot


@pytest.fixture()
def hf_cache(tmp_path, tiny_models) -> Path:
    cache = tmp_path / "hf-cache"
    make_hf_cache(cache, DEFAULT_GDINO, tiny_models.gdino_dir)
    make_hf_cache(cache, GdinoSource("acme/detector", OTHER_REVISION), tiny_models.gdino_dir)
    return cache


@pytest.fixture()
def tiny_manifest(hf_cache, tmp_path) -> Path:
    """A manifest recorded with `pin --from` over the cached default revision."""
    snapshot = hf_cache / "models--IDEA-Research--grounding-dino-tiny" / "snapshots" / DEFAULT_GDINO.revision
    out = tmp_path / "manifest.json"
    assert main(["pin", "--gdino", str(DEFAULT_GDINO), "--from", str(snapshot), "--out", str(out)]) == 0
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --------------------------------------------------------------------------- Grounding DINO


def test_fetch_copies_the_pinned_snapshot_verifies_it_and_it_loads(hf_cache, tiny_manifest, tmp_path):
    dest = tmp_path / "weights"
    manifest = json.loads(tiny_manifest.read_text())
    lock = fetch(dest, gdino=DEFAULT_GDINO, manifest=manifest, strict=True, hf_cache=hf_cache)

    fetched = dest / GDINO_DIR
    names = sorted(p.name for p in fetched.iterdir())
    assert names == sorted(manifest["grounding_dino"][0]["files"])
    assert "README.md" not in names and "AUTOLABEL_TINY_MODEL" not in names  # outside GDINO_PATTERNS
    for name, info in lock["grounding_dino"]["files"].items():
        assert sha256(fetched / name) == info["sha256"] == manifest["grounding_dino"][0]["files"][name]["sha256"]
    assert lock["grounding_dino"]["revision"] == DEFAULT_GDINO.revision
    assert json.loads((dest / LOCK_FILE).read_text()) == lock
    assert verify(dest) == []
    assert leftovers(dest) == sorted([GDINO_DIR, LOCK_FILE])  # no partial directory, no temporary cache

    from serverless.models.grounding_dino import GroundingDino

    model = GroundingDino.load(str(fetched), device="cpu")
    assert model.count_tokens("person . cup") > 0


def test_the_builtin_pin_refuses_other_weights_and_leaves_nothing(hf_cache, tmp_path):
    dest = tmp_path / "weights"
    pinned = BUILTIN_MANIFEST["grounding_dino"][0]["files"]["model.safetensors"]["sha256"]
    with pytest.raises(
        WeightsError, match=rf"model\.safetensors has sha256 [0-9a-f]{{64}}, the manifest expects {pinned}"
    ):
        fetch_grounding_dino(dest, DEFAULT_GDINO, hf_cache=hf_cache)
    assert leftovers(dest) == []


def test_a_file_missing_from_the_manifest_is_refused_with_strict_and_warned_otherwise(
    hf_cache, tiny_manifest, tmp_path
):
    manifest = json.loads(tiny_manifest.read_text())
    del manifest["grounding_dino"][0]["files"]["vocab.txt"]
    with pytest.raises(WeightsError, match=r"vocab\.txt is not in the manifest \(--strict\)"):
        fetch_grounding_dino(tmp_path / "strict", DEFAULT_GDINO, manifest=manifest, strict=True, hf_cache=hf_cache)
    assert leftovers(tmp_path / "strict") == []

    warnings: list[str] = []
    lock = fetch_grounding_dino(
        tmp_path / "lenient", DEFAULT_GDINO, manifest=manifest, hf_cache=hf_cache, warn=warnings.append
    )
    assert "vocab.txt" in lock["files"]
    assert any("vocab.txt is not in the manifest" in w for w in warnings)


def test_a_file_the_manifest_lists_but_the_snapshot_lacks_is_an_error(hf_cache, tiny_manifest, tmp_path):
    manifest = json.loads(tiny_manifest.read_text())
    manifest["grounding_dino"][0]["files"]["extra.json"] = {"sha256": "0" * 64}
    with pytest.raises(WeightsError, match=r"lacks files listed in the manifest: \['extra\.json'\]"):
        fetch_grounding_dino(tmp_path / "w", DEFAULT_GDINO, manifest=manifest, hf_cache=hf_cache)


def test_a_size_mismatch_is_an_error(hf_cache, tiny_manifest, tmp_path):
    manifest = json.loads(tiny_manifest.read_text())
    manifest["grounding_dino"][0]["files"]["config.json"]["size"] += 1
    with pytest.raises(WeightsError, match=r"config\.json has \d+ bytes, the manifest expects \d+"):
        fetch_grounding_dino(tmp_path / "w", DEFAULT_GDINO, manifest=manifest, hf_cache=hf_cache)


def test_an_unlisted_repository_needs_strict_off(hf_cache, tmp_path):
    other = GdinoSource("acme/detector", OTHER_REVISION)
    with pytest.raises(WeightsError, match="no manifest entry for this repository and revision"):
        fetch_grounding_dino(tmp_path / "a", other, strict=True, hf_cache=hf_cache)
    warnings: list[str] = []
    lock = fetch_grounding_dino(tmp_path / "b", other, hf_cache=hf_cache, warn=warnings.append)
    assert lock["repo_id"] == "acme/detector" and "config.json" in lock["files"]
    assert warnings and "no manifest entry" in warnings[0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("IDEA-Research/grounding-dino-tiny@main", "is not a 40-hex commit sha"),
        ("IDEA-Research/grounding-dino-tiny@a2bb814", "is not a 40-hex commit sha"),
        ("acme/detector", r"needs a pinned revision: acme/detector@<40-hex commit sha>"),
        ("not-a-repo@" + OTHER_REVISION, "must be OWNER/NAME@<commit sha>"),
    ],
)
def test_unpinned_sources_are_refused_by_the_cli(spec, message, tmp_path, capsys):
    assert main(["fetch", "--dest", str(tmp_path / "w"), "--gdino", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert leftovers(tmp_path / "w") == []


def test_a_revision_missing_from_the_cache_is_a_clear_error_offline(tmp_path, capsys):
    code = main(
        [
            "fetch",
            "--dest",
            str(tmp_path / "w"),
            "--gdino",
            f"acme/other@{OTHER_REVISION}",
            "--hf-cache",
            str(tmp_path / "empty"),
        ]
    )
    assert code == 2
    assert f"cannot download acme/other@{OTHER_REVISION}" in capsys.readouterr().err


def test_pin_records_every_fetched_file(hf_cache, tmp_path):
    snapshot = hf_cache / "models--acme--detector" / "snapshots" / OTHER_REVISION
    manifest = pin_grounding_dino(GdinoSource("acme/detector", OTHER_REVISION), from_dir=snapshot)
    (entry,) = manifest["grounding_dino"]
    assert entry["repo_id"] == "acme/detector" and entry["revision"] == OTHER_REVISION
    expected = sorted(p.name for p in snapshot.iterdir() if p.suffix in (".json", ".txt", ".safetensors"))
    assert sorted(entry["files"]) == expected
    for name, info in entry["files"].items():
        assert info == {"sha256": sha256(snapshot / name), "size": (snapshot / name).stat().st_size}
    with pytest.raises(WeightsError, match="--from needs the commit sha"):
        pin_grounding_dino(GdinoSource("acme/detector", "main"), from_dir=snapshot)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read manifest"),
        ('{"format": 2, "grounding_dino": []}', 'expected "format": 1'),
        ('{"format": 1, "grounding_dino": {}}', "must be a list"),
        ('{"format": 1, "grounding_dino": [{"repo_id": "a/b", "revision": "x", "files": {"f": {}}}]}', "needs repo_id"),
    ],
)
def test_bad_manifests_are_refused(content, message, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(WeightsError, match=message):
        weights.load_manifest(path)


# --------------------------------------------------------------------------- SAM


@pytest.fixture()
def fake_checkpoint(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "mirror" / "sam_vit_b_01ec64.pth"
    path.parent.mkdir()
    path.write_bytes(b"not really a checkpoint, but bytes with a known digest\n" * 1000)
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_sam_downloads_checks_md5_and_is_idempotent(fake_checkpoint, tmp_path):
    source, md5 = fake_checkpoint
    dest = tmp_path / "weights"
    table = {"vit_b": (source.as_uri(), md5)}
    entry = fetch_sam(dest, "vit_b", checkpoints=table)
    target = sam_checkpoint_path(dest, "vit_b")
    assert target == dest / "sam" / "sam_vit_b.pth"
    assert target.read_bytes() == source.read_bytes()
    assert entry == {
        "model_type": "vit_b",
        "url": source.as_uri(),
        "md5": md5,
        "sha256": sha256(target),
        "size": target.stat().st_size,
    }
    source.unlink()  # a second fetch keeps the verified file instead of downloading again
    assert fetch_sam(dest, "vit_b", checkpoints=table) == entry
    assert sorted(p.name for p in target.parent.iterdir()) == ["sam_vit_b.pth"]


def test_a_sam_mirror_must_match_the_published_md5(fake_checkpoint, tmp_path, capsys):
    source, _ = fake_checkpoint
    dest = tmp_path / "weights"
    code = main(["fetch", "--dest", str(dest), "--no-gdino", "--sam", "vit_b", "--sam-url", source.as_uri()])
    assert code == 2
    err = capsys.readouterr().err
    assert f"expected {SAM_CHECKPOINTS['vit_b'][1]}" in err
    assert not sam_checkpoint_path(dest, "vit_b").exists()
    assert [p.name for p in (dest / "sam").iterdir()] == []  # no partial file left


def test_a_corrupted_existing_checkpoint_is_replaced(fake_checkpoint, tmp_path):
    source, md5 = fake_checkpoint
    target = sam_checkpoint_path(tmp_path / "w", "vit_b")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    fetch_sam(tmp_path / "w", "vit_b", checkpoints={"vit_b": (source.as_uri(), md5)})
    assert target.read_bytes() == source.read_bytes()


def test_unknown_sam_types_and_unreachable_urls(tmp_path):
    with pytest.raises(WeightsError, match=r"unknown SAM model type 'vit_x'"):
        fetch_sam(tmp_path, "vit_x")
    missing = (tmp_path / "absent.pth").as_uri()
    with pytest.raises(WeightsError, match="cannot download file://"):
        fetch_sam(tmp_path, "vit_b", url=missing)
    with pytest.raises(WeightsError, match="exactly one --sam"):
        fetch(tmp_path, gdino=None, sam=["vit_b", "vit_h"], sam_url=missing)


# --------------------------------------------------------------------------- lock, verify, CLI


def test_verify_reports_tampering(fake_checkpoint, hf_cache, tiny_manifest, tmp_path, capsys):
    source, md5 = fake_checkpoint
    dest = tmp_path / "weights"
    fetch(dest, gdino=DEFAULT_GDINO, manifest=json.loads(tiny_manifest.read_text()), hf_cache=hf_cache)
    # A later SAM-only fetch keeps the Grounding DINO record in the lock file.
    lock = json.loads((dest / LOCK_FILE).read_text())
    lock["sam"] = [fetch_sam(dest, "vit_b", checkpoints={"vit_b": (source.as_uri(), md5)})]
    (dest / LOCK_FILE).write_text(json.dumps(lock))
    assert main(["verify", "--dest", str(dest)]) == 0

    with (dest / GDINO_DIR / "vocab.txt").open("a") as handle:
        handle.write("tampered\n")
    sam_checkpoint_path(dest, "vit_b").unlink()
    assert main(["verify", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "vocab.txt: sha256" in err and "sam_vit_b.pth: missing" in err


def test_fetch_keeps_records_of_earlier_fetches(hf_cache, tiny_manifest, fake_checkpoint, tmp_path):
    source, md5 = fake_checkpoint
    table = {"vit_b": (source.as_uri(), md5), "vit_l": (source.as_uri(), md5)}
    dest = tmp_path / "new" / "weights"  # created on demand
    fetch(dest, gdino=DEFAULT_GDINO, manifest=json.loads(tiny_manifest.read_text()), hf_cache=hf_cache)
    fetch(dest, gdino=None, sam=["vit_l"], checkpoints=table)
    lock = fetch(dest, gdino=None, sam=["vit_b"], checkpoints=table)
    assert lock["grounding_dino"]["revision"] == DEFAULT_GDINO.revision
    assert [entry["model_type"] for entry in lock["sam"]] == ["vit_b", "vit_l"]
    assert json.loads((dest / LOCK_FILE).read_text()) == lock
    assert verify(dest) == []


def test_the_rendered_build_command_is_understood_and_paths_agree():
    """function.yaml's postCopy runs `python -m serverless.weights fetch ...`; the runtime env
    points at the paths that command writes."""
    from serverless import render
    from serverless.ontology import load_ontology

    ontology = load_ontology(ROOT / "samples" / "ontology.yaml")
    for kind in ("grounding-dino", "grounded-sam", "sam", "sam-interactor"):
        config = render.function_config(ontology, kind, gpu=False, options=render.RenderOptions(sam_model_type="vit_b"))
        runs = [d["value"] for d in config["spec"]["build"]["directives"]["postCopy"]]
        (command,) = [r for r in runs if "serverless.weights" in r]
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "serverless.weights"]
        args = weights._parser().parse_args(argv[3:])
        env = {item["name"]: item["value"] for item in config["spec"]["env"]}
        if "AUTOLABEL_GDINO_MODEL" in env:
            assert GdinoSource.parse(args.gdino) == DEFAULT_GDINO
            assert env["AUTOLABEL_GDINO_MODEL"] == str(Path(args.dest) / GDINO_DIR)
        if "AUTOLABEL_SAM_CHECKPOINT" in env:
            (model_type,) = args.sam
            assert env["AUTOLABEL_SAM_MODEL_TYPE"] == model_type
            assert env["AUTOLABEL_SAM_CHECKPOINT"] == str(sam_checkpoint_path(args.dest, model_type))


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serverless.weights", "fetch", "--dest", str(tmp_path), "--no-gdino"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing to fetch"
    help_text = subprocess.run(
        [sys.executable, "-m", "serverless.weights", "fetch", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout
    assert "--grounding-dino" in help_text and "--strict" in help_text


# --------------------------------------------------------------------------- any transformers model, checkpoint files


def test_hf_and_file_fetch_into_their_names_verify_and_are_kept_across_fetches(hf_cache, tmp_path, capsys):
    dest = tmp_path / "weights"
    checkpoint = tmp_path / "mirror" / "yolov8s-worldv2.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"an ultralytics checkpoint stand-in with a known digest\n" * 500)
    digest = sha256(checkpoint)
    argv = ["fetch", "--dest", str(dest), "--no-gdino", "--hf-cache", str(hf_cache),
            "--hf", f"owlv2=acme/detector@{OTHER_REVISION}", "--file", f"yolo-world={checkpoint.as_uri()}#sha256={digest}"]
    assert main(argv) == 0
    assert "owlv2" in capsys.readouterr().out
    lock = json.loads((dest / LOCK_FILE).read_text())
    assert lock["pretrained"]["owlv2"]["repo_id"] == "acme/detector"
    assert (dest / "owlv2" / "config.json").is_file() and not (dest / "owlv2" / "README.md").exists()
    assert lock["files"]["yolo-world"]["sha256"] == digest
    assert (dest / "yolo-world" / "yolov8s-worldv2.pt").read_bytes() == checkpoint.read_bytes()
    assert verify(dest) == []
    assert main(["fetch", "--dest", str(dest), "--no-gdino", "--hf-cache", str(hf_cache),
                 "--hf", f"clip=acme/detector@{OTHER_REVISION}"]) == 0
    lock = json.loads((dest / LOCK_FILE).read_text())
    assert set(lock["pretrained"]) == {"owlv2", "clip"} and "yolo-world" in lock["files"]
    (dest / "yolo-world" / "yolov8s-worldv2.pt").write_bytes(b"tampered")
    assert any("yolo-world" in problem for problem in verify(dest))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hf", "owlv2=google/owlv2-base-patch16-ensemble"], "--hf owlv2 google/owlv2-base-patch16-ensemble needs a pinned revision"),
        (["--hf", "owlv2=google/owlv2@main"], "not a 40-hex commit sha"),
        (["--hf", "owlv2"], "--hf must be NAME=VALUE"),
        (["--hf", f"sam=acme/detector@{OTHER_REVISION}"], "not a usable directory name"),
        (["--hf", f"../x=acme/detector@{OTHER_REVISION}"], "not a usable directory name"),
        (["--file", "yolo-world=https://example.org/yolov8s-worldv2.pt"], "the checksum is mandatory"),
        (["--file", f"yolo-world=ftp://example.org/w.pt#sha256={'a' * 64}"], "must be https://"),
    ],
)
def test_bad_hf_and_file_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["fetch", "--dest", str(tmp_path / "w"), "--no-gdino", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w" / LOCK_FILE).exists()


def test_a_file_with_the_wrong_sha256_is_refused_and_leaves_nothing(tmp_path, capsys):
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"bytes")
    dest = tmp_path / "weights"
    assert main(["fetch", "--dest", str(dest), "--no-gdino", "--file", f"yolo-world={checkpoint.as_uri()}#sha256={'0' * 64}"]) == 2
    assert "expected " + "0" * 64 in capsys.readouterr().err
    assert leftovers(dest / "yolo-world") == []
