"""``autolabel serve`` as a user meets it: the start-up text at 80 columns, the limits' options,
and error lines that print what the user typed."""

from __future__ import annotations

import io

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from serverless.serve import FunctionHost, ServeOptions
from sync.commands.serve import print_banner, register
from tests.test_serve import write_function

ANSWER_MAIN = """
    def handler(context, event):
        return {}
"""
LONG_ID = "site-safety-monitoring-north-gate-and-loading-dock-grounded-sam-vit-b"


def test_ids_and_urls_are_whole_at_80_columns(tmp_path):
    long_description = "A detector with a description long enough to need wrapping at eighty columns. " * 3
    write_function(tmp_path, LONG_ID, ANSWER_MAIN, description=long_description)
    write_function(tmp_path, "pth-facebookresearch-sam-vit-h", ANSWER_MAIN, kind="interactor")
    options = ServeOptions(host="127.0.0.1", port=0, function_ports="ephemeral")
    with FunctionHost(sorted(p for p in tmp_path.iterdir()), options) as host:
        buffer = io.StringIO()
        print_banner(host, Console(file=buffer, width=80, force_terminal=False, color_system=None))
        lines = buffer.getvalue().splitlines()
        wanted = [host.dashboard_url, f"CVAT_NUCLIO_PORT={host.dashboard_port}"]
        for name in host.functions:
            wanted += [name, host.function_url(name)]
        for text in wanted:
            assert any(text in line for line in lines), f"{text!r} is cut or wrapped in:\n" + "\n".join(lines)
        assert "A detector with a description" in buffer.getvalue()


@pytest.fixture()
def runner_app():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so "serve" is a sub-command as in autolabel
    return app


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--timeout", "0"], "--timeout must be more than 0"),
        (["--timeout", "-5"], "--timeout must be more than 0"),
        (["--queue-size", "-1"], "--queue-size must lie in 0..10000"),
    ],
)
def test_limit_options_are_checked(tmp_path, runner_app, args, expected):
    result = CliRunner().invoke(runner_app, ["serve", str(tmp_path), *args])
    assert result.exit_code == 2 and expected in result.output


def test_error_lines_print_what_the_user_typed(tmp_path, runner_app):
    missing = tmp_path / "fn [v2]"
    result = CliRunner().invoke(runner_app, ["serve", str(missing), "--port", "0"])
    assert result.exit_code == 2 and "fn [v2]" in result.output


def test_a_deeply_nested_function_yaml_is_one_line(tmp_path, runner_app):
    directory = tmp_path / "deep"
    directory.mkdir()
    (directory / "function.yaml").write_text("[" * 20_000 + "]" * 20_000)
    (directory / "main.py").write_text("def handler(context, event):\n    return {}\n")
    result = CliRunner().invoke(runner_app, ["serve", str(directory), "--port", "0"])
    assert result.exit_code == 2
    assert result.output.strip().endswith("function.yaml: cannot read: nested too deeply")
