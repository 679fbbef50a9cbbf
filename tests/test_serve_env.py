"""``autolabel serve`` gives each function's ``spec.env`` to the model loader
(`serverless.serve_function.function_environ`, read by `serverless.nuclio_adapter`) without
putting it in the process environment: the container image relies on it (only the rendered
``function.yaml`` points the functions at ``/opt/weights``)."""

from __future__ import annotations

import os

from serverless.serve import FunctionHost, ServeOptions
from tests.conftest import ROOT
from tests.test_serve import CVAT_DIRECT_HEADERS, call, cvat_body, real_png_b64


def test_spec_env_reaches_the_model_loader_without_entering_the_process_environment(tmp_path, tiny_models, monkeypatch):
    """As in the container image, where only function.yaml points the functions at /opt/weights."""
    import shutil

    from ruamel.yaml import YAML

    for name in ("AUTOLABEL_GDINO_MODEL", "AUTOLABEL_DETECTOR", "AUTOLABEL_SEGMENTER", "AUTOLABEL_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    directory = tmp_path / "grounding-dino"
    shutil.copytree(ROOT / "serverless" / "functions" / "grounding-dino", directory,
                    ignore=shutil.ignore_patterns("__pycache__"))
    yaml = YAML()
    spec = yaml.load((directory / "function.yaml").read_text())
    spec["spec"]["env"] = [{"name": "AUTOLABEL_GDINO_MODEL", "value": str(tiny_models.gdino_dir)},
                           {"name": "AUTOLABEL_DEVICE", "value": "cpu"}]
    with (directory / "function.yaml").open("w") as out:
        yaml.dump(spec, out)
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        answer = call(host.functions["grounding-dino"].port, "POST", "/", CVAT_DIRECT_HEADERS,
                      cvat_body(image=real_png_b64(32, 24)))
        assert answer.status == 200, answer.body[:300]
        assert "AUTOLABEL_GDINO_MODEL" not in os.environ


def test_the_banner_warns_of_tiny_models_named_only_in_spec_env(tmp_path, tiny_models, monkeypatch):
    import io

    from rich.console import Console

    from sync.commands.serve import print_banner
    from tests.test_serve import write_function

    for name in ("AUTOLABEL_GDINO_MODEL", "AUTOLABEL_DETECTOR", "AUTOLABEL_SEGMENTER",
                 "AUTOLABEL_SAM_CHECKPOINT", "AUTOLABEL_SAM_MODEL_TYPE"):
        monkeypatch.delenv(name, raising=False)
    main = "def handler(context, event):\n    return {}\n"
    plain = write_function(tmp_path, "plain", main)
    tiny = write_function(tmp_path, "tiny", main, env={"AUTOLABEL_GDINO_MODEL": str(tiny_models.gdino_dir)})
    for dirs, warned in (([plain], False), ([plain, tiny], True)):
        buffer = io.StringIO()
        print_banner(FunctionHost(dirs, ServeOptions(port=0)), Console(file=buffer, width=120))
        assert ("TINY RANDOM MODELS" in buffer.getvalue()) is warned
