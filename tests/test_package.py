"""The installed package, not the checkout: build the wheel, install it into a temporary venv
and run the user-facing doors from an empty directory.

The wheel is built (``pip wheel --no-deps --no-build-isolation``) from a copy of the package
sources, so the checkout gets no ``build/`` folder. It is installed with ``--no-deps`` into a
venv made with ``--without-pip``; third-party dependencies come from this interpreter's
site-packages through a ``.pth`` line that lists that folder. A ``.pth`` line that is a path is
only appended to ``sys.path``; the ``.pth`` files inside it (the checkout's editable install) are
not run, so the project itself can only be imported from the wheel: the first test checks that.
Every command runs in an empty directory with no ``PYTHONPATH`` and no inherited
``AUTOLABEL_*`` variables, so a file missing from the wheel makes a command fail.
"""

from __future__ import annotations

import ast
import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.package

BUILD_FILES = ("pyproject.toml", "README.md", "MANIFEST.in")
"""Top-level files the build reads (besides the package folders), when present."""
COMMAND_TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    package_root: Path
    """``site-packages/serverless`` of the temporary venv."""
    empty: Path
    """The (empty) working directory of every command."""
    cache: Path
    """``AUTOLABEL_CACHE``: empty, so no weights are found outside the test's own."""

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AUTOLABEL_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env |= {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1",
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "0",
            "TOKENIZERS_PARALLELISM": "false",
            "AUTOLABEL_DEVICE": "cpu",
            "AUTOLABEL_CACHE": str(self.cache),
        }
        return env | extra

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=self.empty,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )


def _package_dirs() -> list[str]:
    """The top-level package folders `[tool.setuptools.packages.find]` includes."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]]


def _copy_sources(dest: Path) -> None:
    for name in BUILD_FILES:
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, dest / name)
    for package in _package_dirs():
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("package")
    source, dist, venv, empty, cache = (base / name for name in ("src", "dist", "venv", "empty", "cache"))
    for folder in (source, dist, empty, cache):
        folder.mkdir()
    _copy_sources(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _check(subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT))
    (wheel,) = dist.glob("*.whl")
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT))
    python = venv / "bin" / "python"
    _check(subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT))
    purelib = _check(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT)).stdout.strip()
    # Third-party dependencies only: a path line adds the folder, its .pth files are not run.
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "_autolabel_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    return Installed(wheel, venv, Path(purelib) / "serverless", empty, cache)


@pytest.fixture(scope="module")
def tiny_env(installed, tmp_path_factory) -> dict[str, str]:
    """``autolabel models make-tiny`` of the installed package; its ``export`` lines as variables."""
    directory = tmp_path_factory.mktemp("package-tiny")
    result = _check(installed.run("autolabel", "models", "make-tiny", str(directory)))
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert all(name.startswith("AUTOLABEL_") for name in exports), exports
    assert Path(exports["AUTOLABEL_GDINO_MODEL"]).is_dir()
    return exports | {"TINY_DIR": str(directory)}


def png_b64(width: int = 96, height: int = 64) -> str:
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------- tests
def test_the_wheel_holds_every_file_of_the_packages(installed):
    """Package data included: every source file of the packages (function yaml files, the
    samples) is in the wheel, at the same path."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in _package_dirs()
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert sorted(expected - names) == []
    assert {"serverless/samples/ontology.yaml", "serverless/functions/grounding-dino/ontology.yaml"} <= names


def test_the_project_is_imported_from_the_venv_not_the_checkout(installed):
    code = "import serverless, sync, cvat_bridge; print(serverless.__file__, sync.__file__, cvat_bridge.__file__)"
    files = _check(installed.run(str(installed.bin / "python"), "-c", code)).stdout.split()
    assert all(Path(file).is_relative_to(installed.venv) for file in files), files


def test_demo_prelabels_the_installed_samples(installed, tiny_env):
    """The demo reads the photographs and ontology shipped in the wheel. Grounding DINO is the
    tiny one and no SAM weights are configured or cached, so it pre-labels boxes only (the
    masks path, which costs most of a demo's time, is `tests/test_cli.py`'s)."""
    env = installed.env(AUTOLABEL_GDINO_MODEL=tiny_env["AUTOLABEL_GDINO_MODEL"])
    _check(installed.run("autolabel", "demo", "--out", "demo.json", "--tiny-dir", tiny_env["TINY_DIR"], env=env))
    data = json.loads((installed.empty / "demo.json").read_text())
    assert [image["file_name"] for image in data["images"]] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg",
                                                                "rocket.jpg"]
    assert Path(data["info"]["images_root"]) == installed.package_root / "samples"
    assert data["info"]["tiny_models"] is True
    (installed.empty / "demo.json").unlink()


def test_functions_render_and_serve_from_an_empty_directory(installed, tiny_env, tmp_path):
    """Render the functions for the installed sample ontology, then serve the grounding-dino
    one and detect on one image through the Nuclio dashboard route."""
    ontology = installed.package_root / "samples" / "ontology.yaml"
    out = tmp_path / "functions"
    result = _check(installed.run("autolabel", "functions", "render", "--ontology", str(ontology), "--out", str(out)))
    assert sorted(Path(line).name for line in result.stdout.split()) == sorted(
        ["grounding-dino", "grounded-sam", "sam", "sam-interactor"]
    )
    port = _free_port()
    command = ["autolabel", "serve", str(out / "grounding-dino"), "--port", str(port), "--function-ports", "ephemeral"]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=installed.empty, env=installed.env(**_models(tiny_env)),
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        names = _wait_healthy(server, port, log)
        status, body = _request(port, "POST", "/api/function_invocations", {"image": png_b64()},
                                {"x-nuclio-function-name": names[0], "Content-Type": "application/json"})
        assert status == 200, body
        assert isinstance(body, list) and all({"label", "points", "type"} <= set(item) for item in body)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, log.read_text()


MAIN_SMOKE = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path

    import nuclio_sdk
    from ruamel.yaml import YAML

    root, image = Path(sys.argv[1]), sys.argv[2]
    answers = {}
    for directory in sorted(p for p in root.iterdir() if (p / "main.py").is_file()):
        os.chdir(directory)  # as Nuclio runs main.py: from its own directory, imported as "main"
        sys.path.insert(0, str(directory))
        import main

        logger = nuclio_sdk.Logger(logging.INFO, directory.name)
        logger.set_handler("stderr", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
        context = nuclio_sdk.Context(logger=logger)
        main.init_context(context)
        kind = YAML(typ="safe").load(Path("function.yaml").read_text())["metadata"]["annotations"]["type"]
        body = {"image": image}
        if kind == "detector":
            body["threshold"] = 1.0  # nothing to segment: loading is what is checked here, not the models
        else:
            body |= {"pos_points": [[40, 30]], "neg_points": [[5, 5]], "obj_bbox": None}
        reply = main.handler(context, nuclio_sdk.Event(body=body, content_type="application/json"))
        answers[directory.name] = [kind, reply.status_code, type(json.loads(reply.body)).__name__]
        del sys.modules["main"]
        sys.path.remove(str(directory))
    print(json.dumps(answers))
    """
)


def test_every_checked_in_function_main_runs_installed(installed, tiny_env):
    """Each ``serverless/functions/*/main.py`` of the wheel, imported as Nuclio imports it:
    ``init_context`` loads the tiny models (and the ontology.yaml beside main.py) and the
    handler answers one image."""
    functions = installed.package_root / "functions"
    expected = sorted(p.name for p in (ROOT / "serverless" / "functions").iterdir() if (p / "main.py").is_file())
    python = str(installed.bin / "python")
    result = _check(installed.run(python, "-c", MAIN_SMOKE, str(functions), png_b64(),
                                  env=installed.env(**_models(tiny_env))))
    answers = json.loads(result.stdout.splitlines()[-1])
    assert sorted(answers) == expected
    assert all(status == 200 for _, status, _ in answers.values()), answers
    assert all(body == ("list" if kind == "detector" else "dict") for kind, _, body in answers.values()), answers


def _imported_top_levels(package: Path) -> dict[str, Path]:
    """Top-level module names the package's code imports (absolute imports), with one file each."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_third_party_import_is_a_declared_dependency():
    """The temporary venv borrows this venv's packages, so a missing requirement would not show
    there: every third-party module the product code imports must come from a distribution that
    pyproject.toml declares (a dependency or an extra), not from another package's dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    declared = {canonicalize_name(Requirement(r).name) for r in listed}
    ours = set(_package_dirs())
    providers = packages_distributions()
    undeclared = {}
    for package in ours:
        for module, path in _imported_top_levels(ROOT / package).items():
            if module in sys.stdlib_module_names or module in ours or module == "__future__":
                continue
            dists = {canonicalize_name(d) for d in providers.get(module, [module])}
            if not dists & declared:
                undeclared[module] = (sorted(dists), path.relative_to(ROOT).as_posix())
    assert undeclared == {}


# -------------------------------------------------------------------------- cvat-sdk versions
def _requirements() -> dict[str, Requirement]:
    """cvat-sdk and cvat-cli as pyproject.toml requires them (dependencies and extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    found = {req.name: req for req in map(Requirement, listed) if req.name in ("cvat-sdk", "cvat-cli")}
    assert set(found) == {"cvat-sdk", "cvat-cli"}
    return found


@given(minor=st.integers(17, 999), patch=st.integers(0, 20))
def test_every_cvat_sdk_2x_from_2_17_is_accepted(minor, patch):
    """No cap below the next major version: CVAT 2.84 (published) and any later 2.x release
    can be used with the SDK of its own minor version."""
    for requirement in _requirements().values():
        assert requirement.specifier.contains(Version(f"2.{minor}.{patch}"))


@given(version=st.one_of(
    st.builds("2.{}.{}".format, st.integers(0, 16), st.integers(0, 20)),
    st.builds("{}.{}.0".format, st.integers(3, 9), st.integers(0, 99)),
    st.builds("1.{}.0".format, st.integers(0, 99)),
))
def test_cvat_sdk_before_2_17_or_after_2x_is_refused(version):
    for requirement in _requirements().values():
        assert not requirement.specifier.contains(Version(version))


def test_the_wheel_declares_the_same_cvat_sdk_range(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        lines = wheel.read(metadata).decode().splitlines()
    declared = [Requirement(line.removeprefix("Requires-Dist: ")) for line in lines if line.startswith("Requires-Dist:")]
    sdk = {str(req.specifier) for req in declared if req.name == "cvat-sdk"}
    assert sdk == {str(_requirements()["cvat-sdk"].specifier)}
    assert Version("2.84.0") in _requirements()["cvat-sdk"].specifier


# ------------------------------------------------------------------------------------- helpers
def _models(tiny_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tiny_env.items() if k.startswith("AUTOLABEL_")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, body: object = None, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _wait_healthy(server: subprocess.Popen, port: int, log: Path, timeout: float = 240) -> list[str]:
    """The served function names once ``/healthz`` says every function is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"autolabel serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            status, health = _request(port, "GET", "/healthz")
        except OSError:
            status = None
        if status == 200:
            return sorted(health["functions"])
        time.sleep(0.2)
    pytest.fail(f"autolabel serve was not ready within {timeout} s:\n{log.read_text()}")
