"""deploy/: shell syntax, every YAML file, the compose wiring CVAT needs, the Dockerfile's
contract with serverless.weights, and deploy.sh's --dry-run (nuctl and Docker are not
installed here, so the dry run is what can be run)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DEPLOY_SH = DEPLOY / "nuclio" / "deploy.sh"
KINDS = ("grounding-dino", "grounded-sam", "sam", "sam-interactor")
BASH = shutil.which("bash")


def load_yaml(path: Path):
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def run_deploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(DEPLOY_SH), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def commands(output: str) -> list[list[str]]:
    """The commands a dry run printed (``+ cmd``), split back into argv as a shell would."""
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ") and " || " not in line]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Function directories written by the real renderer, under a path with a space in it."""
    from serverless.ontology import load_ontology
    from serverless.render import render_functions

    out = tmp_path_factory.mktemp("deploy") / "rendered functions"
    render_functions(load_ontology(ROOT / "samples" / "ontology.yaml"), out, ",".join(KINDS))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(KINDS)
    return out


# --------------------------------------------------------------------------- files


def test_every_shell_script_parses():
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert {p.name for p in scripts} >= {"deploy.sh", "entrypoint.sh"}
    for script in scripts:
        result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_every_yaml_file_parses():
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 5
    for path in files:
        assert isinstance(load_yaml(path), dict), f"{path}: expected a mapping"


def test_compose_runs_autolabel_serve_on_cvats_network():
    compose = load_yaml(DEPLOY / "compose" / "docker-compose.autolabel.yml")
    service = compose["services"]["autolabel"]
    base = DEPLOY / "compose"
    context = (base / service["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / service["build"]["dockerfile"]).is_file()
    assert service["build"]["args"]["VARIANT"] == "cpu"
    assert service["environment"]["AUTOLABEL_ONTOLOGY"] == "/config/ontology.yaml"
    assert set(service["environment"]["AUTOLABEL_FUNCTIONS"].split(",")) == set(KINDS)
    (volume,) = service["volumes"]
    source, target, mode = volume.rsplit(":", 2)
    assert (target, mode) == ("/config/ontology.yaml", "ro")
    default_source = re.fullmatch(r"\$\{AUTOLABEL_ONTOLOGY_FILE:-(.+)\}", source).group(1)
    assert (base / default_source).resolve() == (ROOT / "samples" / "ontology.yaml").resolve()
    assert service["networks"]["cvat"]["aliases"] == ["autolabel"]
    network = compose["networks"]["cvat"]
    assert network["external"] is True
    assert network["name"] == "${CVAT_NETWORK:-cvat_cvat}"

    gpu = load_yaml(DEPLOY / "compose" / "docker-compose.autolabel.gpu.yml")["services"]["autolabel"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_cvat_override_points_both_lambda_callers_at_autolabel():
    autolabel = load_yaml(DEPLOY / "compose" / "docker-compose.autolabel.yml")["services"]["autolabel"]
    override = load_yaml(DEPLOY / "compose" / "docker-compose.cvat.yml")
    expected = {
        "CVAT_SERVERLESS": "1",
        "CVAT_NUCLIO_HOST": autolabel["networks"]["cvat"]["aliases"][0],
        "CVAT_NUCLIO_PORT": autolabel["environment"]["AUTOLABEL_PORT"],
        "CVAT_NUCLIO_SCHEME": "http",
        "CVAT_NUCLIO_INVOKE_METHOD": "dashboard",
        "CVAT_NUCLIO_FUNCTION_NAMESPACE": "nuclio",
        "CVAT_NUCLIO_DEFAULT_TIMEOUT": "120",
    }
    assert set(override["services"]) == {"cvat_server", "cvat_worker_annotation"}
    for name in ("cvat_server", "cvat_worker_annotation"):
        assert override["services"][name]["environment"] == expected


def test_dockerfile_fetches_weights_where_rendered_functions_look():
    from serverless import render, weights

    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{CPU_BASE_IMAGE\} AS base-cpu$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{GPU_BASE_IMAGE\} AS base-gpu$", text, re.MULTILINE)
    assert re.search(r"^FROM base-\$\{VARIANT\}$", text, re.MULTILINE)
    assert f"ARG GPU_BASE_IMAGE={render.GPU_BASE_IMAGE}" in text
    assert f"ARG CPU_BASE_IMAGE={render.CPU_BASE_IMAGE}" in text
    fetch = re.search(r"python -m serverless\.weights fetch --dest (\S+)", text)
    assert fetch and fetch.group(1) == render.WEIGHTS_ROOT
    assert str(Path(render.WEIGHTS_ROOT) / weights.GDINO_DIR) == render.GDINO_WEIGHTS
    assert "ENV HF_HUB_OFFLINE=1" in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for item in source.split():
            assert (ROOT / item).exists(), f"Dockerfile copies {item}, which is not in the repository"


def test_entrypoint_refuses_a_missing_ontology(tmp_path):
    result = subprocess.run(
        [BASH, str(DEPLOY / "docker" / "entrypoint.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOLABEL_ONTOLOGY": str(tmp_path / "none.yaml"), "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no ontology at {tmp_path / 'none.yaml'}")


# --------------------------------------------------------------------------- deploy.sh --dry-run


def test_dry_run_deploys_every_rendered_function_on_cpu(rendered):
    result = run_deploy("--dry-run", "--rendered", str(rendered))
    assert result.returncode == 0, result.stderr
    argv = commands(result.stdout)
    deploys = [a for a in argv if a[:2] == ["nuctl", "deploy"]]
    assert deploys == [
        [
            "nuctl",
            "deploy",
            "--project-name",
            "cvat",
            "--path",
            str(rendered / kind),
            "--file",
            str(rendered / kind / "function.yaml"),
            "--platform",
            "local",
            "--namespace",
            "nuclio",
        ]
        for kind in KINDS
    ]
    wheel = next(a for a in argv if "wheel" in a)
    assert wheel[1:] == ["-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(rendered / ".wheels")]
    copies = [a for a in argv if a[0] == "cp"]
    assert copies == [["cp", "-R", str(rendered / ".wheels"), str(rendered / kind / "wheels")] for kind in KINDS]
    assert (
        "+ nuctl get project cvat --platform local --namespace nuclio || "
        "nuctl create project cvat --platform local --namespace nuclio"
    ) in result.stdout.splitlines()
    assert argv[-1] == ["nuctl", "get", "function", "--platform", "local", "--namespace", "nuclio"]
    # Nothing ran: no wheel was built or copied.
    assert not (rendered / ".wheels").exists()
    assert not any((rendered / kind / "wheels").exists() for kind in KINDS)


def test_dry_run_gpu_uses_function_gpu_yaml_and_the_selected_functions(rendered):
    result = run_deploy(
        "--dry-run", "--gpu", "--rendered", str(rendered), "--functions", "sam,grounded-sam", "--network", "cvat_cvat"
    )
    assert result.returncode == 0, result.stderr
    deploys = [a for a in commands(result.stdout) if a[:2] == ["nuctl", "deploy"]]
    assert [a[a.index("--file") + 1] for a in deploys] == [
        str(rendered / "sam" / "function-gpu.yaml"),
        str(rendered / "grounded-sam" / "function-gpu.yaml"),
    ]
    for a in deploys:
        config = json.loads(a[a.index("--platform-config") + 1])
        assert config == {"attributes": {"network": "cvat_cvat"}}


def test_dry_run_on_kubernetes_merges_overrides_and_pushes_to_the_registry(rendered):
    overrides = DEPLOY / "kubernetes" / "function-gpu.overrides.yaml"
    result = run_deploy(
        "--dry-run",
        "--gpu",
        "--platform",
        "kube",
        "--namespace",
        "cvat",
        "--registry",
        "registry.example.com/cvat",
        "--run-registry",
        "pull.example.com/cvat",
        "--overrides",
        str(overrides),
        "--rendered",
        str(rendered),
        "--functions",
        "grounding-dino",
    )
    assert result.returncode == 0, result.stderr
    argv = commands(result.stdout)
    merged = str(rendered / "grounding-dino" / "function-gpu.deploy.yaml")
    merge = next(a for a in argv if a[1].endswith("merge_overrides.py"))
    assert merge[2:] == [str(rendered / "grounding-dino" / "function-gpu.yaml"), str(overrides), "--out", merged]
    (deploy,) = [a for a in argv if a[:2] == ["nuctl", "deploy"]]
    assert deploy == [
        "nuctl",
        "deploy",
        "--project-name",
        "cvat",
        "--path",
        str(rendered / "grounding-dino"),
        "--file",
        merged,
        "--platform",
        "kube",
        "--namespace",
        "cvat",
        "--registry",
        "registry.example.com/cvat",
        "--run-registry",
        "pull.example.com/cvat",
    ]


def test_dry_run_renders_from_the_ontology_first(tmp_path):
    ontology = ROOT / "samples" / "ontology.yaml"
    result = run_deploy(
        "--dry-run",
        "--ontology",
        str(ontology),
        "--functions",
        "grounding-dino,sam",
        "--workdir",
        str(tmp_path),
        "--gdino-model",
        "IDEA-Research/grounding-dino-base@" + "1" * 40,
        "--sam-model-type",
        "vit_b",
        "--autolabel",
        "/opt/bin/autolabel",
    )
    assert result.returncode == 0, result.stderr
    argv = commands(result.stdout)
    assert argv[0] == [
        "/opt/bin/autolabel",
        "functions",
        "render",
        "--ontology",
        str(ontology),
        "--out",
        str(tmp_path / "functions"),
        "--kinds",
        "grounding-dino,sam",
        "--gdino-model",
        "IDEA-Research/grounding-dino-base@" + "1" * 40,
        "--sam-model-type",
        "vit_b",
    ]
    assert [a[a.index("--path") + 1] for a in argv if a[:2] == ["nuctl", "deploy"]] == [
        str(tmp_path / "functions" / "grounding-dino"),
        str(tmp_path / "functions" / "sam"),
    ]
    assert list(tmp_path.iterdir()) == []  # the dry run rendered nothing


def test_the_rendered_functions_render_command_is_the_real_one(tmp_path):
    """The render command deploy.sh prints exists with these options in the CLI module."""
    from typer.testing import CliRunner

    from sync.commands.functions import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "render",
            "--ontology",
            str(ROOT / "samples" / "ontology.yaml"),
            "--out",
            str(out),
            "--kinds",
            "grounding-dino,sam",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["grounding-dino", "sam"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--functions", "yolo"], "unknown function 'yolo' in --functions"),
        (["--platform", "swarm"], "--platform must be local or kube, got 'swarm'"),
        (["--platform", "kube"], "--platform kube needs --registry URL"),
        (["--platform", "kube", "--registry", "r", "--network", "n"], "--network is a Docker setting"),
        (["--ontology", "/nonexistent/site.yaml"], "--ontology /nonexistent/site.yaml: no such file"),
        (["--rendered", "/nonexistent/dir"], "--rendered /nonexistent/dir: no such directory"),
        (["--sam-model-type", "vit_x"], "--sam-model-type must be vit_h, vit_l or vit_b"),
        (["--overrides", "/nonexistent/o.yaml"], "--overrides /nonexistent/o.yaml: no such file"),
        (["--registry"], "--registry needs a value"),
        (["--bogus"], "unknown option '--bogus'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = run_deploy("--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {result.stderr[7:]}" and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_rendered_dir_without_the_gpu_file_is_refused(rendered, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(rendered / "sam", partial / "sam")
    (partial / "sam" / "function-gpu.yaml").unlink()
    result = run_deploy("--dry-run", "--gpu", "--rendered", str(partial), "--functions", "sam")
    assert result.returncode == 2
    assert f"{partial}/sam/function-gpu.yaml: not found" in result.stderr


def test_a_real_run_needs_nuctl(rendered, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_deploy("--rendered", str(rendered), env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 2
    assert "nuctl is not on PATH" in result.stderr


def test_help_lists_every_option():
    result = run_deploy("--help")
    assert result.returncode == 0
    source = DEPLOY_SH.read_text()
    for option in re.findall(r"^\s+(--[a-z-]+)\)", source, re.MULTILINE):
        assert option in result.stdout, f"{option} is parsed but not in --help"


# --------------------------------------------------------------------------- overrides


def test_kubernetes_overrides_merge_into_a_valid_gpu_function(rendered, tmp_path):
    from serverless.serve_spec import read_function_dir

    base = rendered / "grounded-sam" / "function-gpu.yaml"
    merged_dir = tmp_path / "grounded-sam"
    merged_dir.mkdir()
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else "python3",
            str(DEPLOY / "nuclio" / "merge_overrides.py"),
            str(base),
            str(DEPLOY / "kubernetes" / "function-gpu.overrides.yaml"),
            "--out",
            str(merged_dir / "function.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    original, merged = load_yaml(base), load_yaml(merged_dir / "function.yaml")
    spec = merged["spec"]
    assert spec["resources"]["limits"] == {"nvidia.com/gpu": 1, "memory": "16Gi"}
    assert spec["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 4)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["readinessTimeoutSeconds"] == 600
    # Everything CVAT reads is untouched, and the result is still a function CVAT accepts.
    assert merged["metadata"] == original["metadata"]
    assert json.loads(merged["metadata"]["annotations"]["spec"]) == json.loads(
        original["metadata"]["annotations"]["spec"]
    )
    for key in ("env", "build", "triggers", "handler", "description"):
        assert spec[key] == original["spec"][key]
    shutil.copy2(rendered / "grounded-sam" / "main.py", merged_dir / "main.py")
    definition = read_function_dir(merged_dir)
    assert definition.name == original["metadata"]["name"]


def test_merge_overrides_refuses_a_non_mapping(tmp_path, rendered):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    result = subprocess.run(
        [
            "python3" if not (ROOT / ".venv").exists() else str(ROOT / ".venv" / "bin" / "python"),
            str(DEPLOY / "nuclio" / "merge_overrides.py"),
            str(rendered / "sam" / "function.yaml"),
            str(bad),
            "--out",
            str(tmp_path / "out.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {bad}: expected a YAML mapping at the top level\n"
    assert not (tmp_path / "out.yaml").exists()


def _merge_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_overrides", DEPLOY / "nuclio" / "merge_overrides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_keys = st.sampled_from(["spec", "resources", "limits", "env", "a", "b", "nvidia.com/gpu"])
_leaves = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3), st.none())
_trees = st.recursive(_leaves, lambda children: st.dictionaries(_keys, children, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(base=st.dictionaries(_keys, _trees, max_size=4), override=st.dictionaries(_keys, _trees, max_size=4))
def test_merge_keeps_base_keys_and_lets_the_override_win(base, override):
    merge = _merge_module().merge
    merged = merge(copy.deepcopy(base), copy.deepcopy(override))

    def check(result, old, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(old.get(key), dict):
                check(result[key], old[key], value)
            else:
                assert result[key] == value  # lists and scalars replace
        for key, value in old.items():
            if key not in new:
                assert result[key] == value  # untouched keys survive
        assert set(result) == set(old) | set(new)

    check(merged, base, override)


def test_dry_run_deploys_a_rendered_function_of_another_model(tmp_path):
    """A trained detector (``render --detector yolo:best.pt``) is deployed from its rendered
    directory like the default functions; names are still checked."""
    from serverless.ontology import parse_ontology
    from serverless.render import RenderOptions, render_functions

    weights = tmp_path / "best.pt"
    weights.write_bytes(b"trained weights")
    out = tmp_path / "functions"
    render_functions(parse_ontology("labels: [{name: cat}]\n"), out, "detector", RenderOptions(detector=f"yolo:{weights}"))
    result = run_deploy("--dry-run", "--rendered", str(out), "--functions", "yolo")
    assert result.returncode == 0, result.stderr
    deploys = [a for a in commands(result.stdout) if a[:2] == ["nuctl", "deploy"]]
    assert [a[a.index("--file") + 1] for a in deploys] == [str(out / "yolo" / "function.yaml")]
    for bad, message in (("nothere", "not found"), ("../x", "not a function directory name")):
        refused = run_deploy("--dry-run", "--rendered", str(out), "--functions", bad)
        assert refused.returncode == 2 and message in refused.stderr
    refused = run_deploy("--dry-run", "--functions", "yolo")
    assert refused.returncode == 2 and "render them, then --rendered DIR" in refused.stderr
