"""TLS and the server URL: a private CA is trusted through ``--ca-cert`` / ``CVAT_CA_CERT`` /
``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE`` (verification stays on by default), and a URL is
read and quoted as the user typed it (``host:port`` without a scheme means ``https://``, as
cvat-cli reads it).

The fake CVAT speaks HTTPS with a throwaway CA and server certificate made by ``trustme`` at
test time; every client is the real cvat-sdk (2.80, or 2.17 with ``PYTHONPATH=.cache/sdk-2.17``).
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from cvat_bridge.client import CvatError, CvatSettings, connect
from tests.bridge_support import ADMIN, cvat_env, serve, settings_for

AUTOLABEL = [sys.executable, "-m", "sync.cli"]
CA_VARIABLES = ("CVAT_CA_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(organization_name="autolabel test CA")


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tls") / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def tls_fake(ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    yield from serve(ssl_context=context)


@pytest.fixture(scope="module")
def plain_fake():
    yield from serve()


@pytest.fixture
def clean_env(monkeypatch):
    """No CA variable of the machine running the tests leaks in."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------------ in process
def test_an_untrusted_certificate_is_one_clear_error_and_not_retried(tls_fake, clean_env):
    assert tls_fake.url.startswith("https://")
    with pytest.raises(CvatError) as failed:
        connect(settings_for(tls_fake))
    message = str(failed.value)
    assert "\n" not in message
    assert f"{tls_fake.url}: read the server version: connection failed: the server's TLS certificate is not " \
           "trusted (" in message
    assert "--ca-cert FILE" in message and "CVAT_CA_CERT" in message and "--insecure" in message
    assert failed.value.retryable is False
    assert tls_fake.requests == []  # the handshake failed: no request reached the server


@pytest.mark.parametrize("variable", [None, "CVAT_CA_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_private_ca_is_trusted_from_the_option_or_a_standard_variable(tls_fake, ca_file, clean_env, variable):
    overrides = {"url": tls_fake.url, "username": ADMIN[0], "password": ADMIN[1]}
    if variable is None:
        overrides.update(ca_cert=str(ca_file), ca_cert_source="--ca-cert")
    else:
        clean_env.setenv(variable, str(ca_file))
    settings = CvatSettings.from_env(**overrides)
    assert settings.verify_tls and settings.ca_cert == str(ca_file)
    assert settings.ca_cert_source == (variable or "--ca-cert")
    client = connect(settings)
    assert client.sdk.users.retrieve_current_user().username == ADMIN[0]


def test_a_directory_of_hashed_certificates_is_trusted_too(tls_fake, ca, tmp_path, clean_env):
    directory = tmp_path / "certs"
    directory.mkdir()
    name = subprocess.run(
        ["openssl", "x509", "-hash", "-noout"], input=ca.cert_pem.bytes(), capture_output=True, check=True
    ).stdout.decode().strip()
    ca.cert_pem.write_to_path(str(directory / f"{name}.0"))
    client = connect(settings_for(tls_fake, ca_cert=str(directory)))
    assert client.sdk.users.retrieve_current_user().username == ADMIN[0]


def test_the_option_wins_over_the_variables(tls_fake, ca_file, tmp_path, clean_env):
    other = trustme.CA()
    wrong = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(wrong))
    clean_env.setenv("SSL_CERT_FILE", str(wrong))
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(wrong))
    settings = CvatSettings.from_env(url=tls_fake.url, username=ADMIN[0], password=ADMIN[1], ca_cert=str(ca_file))
    connect(settings)
    with pytest.raises(CvatError, match="not trusted"):
        connect(CvatSettings.from_env(url=tls_fake.url, username=ADMIN[0], password=ADMIN[1]))


def test_a_missing_or_broken_ca_file_names_where_it_came_from(tmp_path, clean_env):
    with pytest.raises(CvatError) as missing:
        CvatSettings.from_env(url="https://cvat.example.com", username="u", password="p",
                              ca_cert=str(tmp_path / "nope.pem"), ca_cert_source="--ca-cert")
    assert str(missing.value) == (
        f"--ca-cert {str(tmp_path / 'nope.pem')!r}: no such file (a PEM file of CA certificates is expected)"
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("this is not a certificate\n")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(broken))
    with pytest.raises(CvatError, match=rf"^REQUESTS_CA_BUNDLE {str(broken)!r}: not a PEM file of CA certificates"):
        CvatSettings.from_env(url="https://cvat.example.com", username="u", password="p")
    # --insecure needs no CA bundle at all
    assert not CvatSettings.from_env(url="https://cvat.example.com", username="u", password="p",
                                     verify_tls=False).verify_tls


# ------------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("127.0.0.1:8254", "https://127.0.0.1:8254"),
        ("cvat.example.com", "https://cvat.example.com"),
        ("  cvat.example.com:8443/cvat/ ", "https://cvat.example.com:8443/cvat"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("localhost:8080", "https://localhost:8080"),
        ("[::1]:8080", "https://[::1]:8080"),  # an IPv6 host keeps its brackets
        ("http://[fd00::5]/cvat/", "http://[fd00::5]/cvat"),
    ],
)
def test_a_url_without_scheme_means_https(typed, url):
    settings = CvatSettings(url=typed, username="u", password="p")
    assert settings.server == url
    assert settings.url_as_typed == typed


_TYPED = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="?#@"), min_size=1, max_size=30)


@given(typed=_TYPED)
def test_a_bad_url_is_quoted_as_typed(typed):
    try:
        CvatSettings(url=typed, username="u", password="p")
    except CvatError as err:
        message = str(err)
        assert message.endswith(f"; got {typed!r}"), message
        assert "https:///" not in message and "\n" not in message


def test_the_reported_case_is_quoted_as_typed():
    with pytest.raises(CvatError) as failed:
        CvatSettings(url="ftp://127.0.0.1:8254", username="u", password="p")
    assert str(failed.value).endswith("got 'ftp://127.0.0.1:8254'")
    with pytest.raises(CvatError, match=r"got '127\.0\.0\.1:99999'$"):
        CvatSettings(url="127.0.0.1:99999", username="u", password="p")


@pytest.mark.parametrize(
    "typed",
    ["alice:pw-Secret-1@cvat.example.com", "alice:pw-Secret-1@cvat.example.com:port", "https://alice:pw-Secret-1@[::1",
     "ftp://alice:pw-Secret-1@cvat.example.com", "https://cvat.example.com/?token=pw-Secret-1"],
)
def test_credentials_in_a_url_are_refused_and_never_quoted(typed):
    try:
        CvatSettings(url=typed, username="u", password="p")
    except CvatError as err:
        assert "pw-Secret-1" not in str(err)
    else:
        assert typed.endswith("?token=pw-Secret-1")  # a query is dropped from the server URL
        assert "pw-Secret-1" not in CvatSettings(url=typed, username="u", password="p").server


def test_a_plain_http_server_reached_without_scheme_gets_a_hint(plain_fake, clean_env):
    typed = plain_fake.url.removeprefix("http://")
    with pytest.raises(CvatError) as failed:
        connect(settings_for(plain_fake, url=typed, retries=0))
    message = str(failed.value)
    assert message.startswith(f"https://{typed}: read the server version: connection failed: TLS handshake failed")
    assert message.endswith(
        f"the URL {typed!r} has no scheme, so https:// was assumed: write http://{typed} for a plain-HTTP server"
    )


# ------------------------------------------------------------------------------------ the CLI
def test_every_cvat_command_offers_ca_cert():
    from typer.testing import CliRunner

    from sync.cli import app

    for command in ("push", "pull", "status", "prelabel"):
        result = CliRunner().invoke(app, ["cvat", command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "--ca-cert" in result.output, (command, result.output)


def test_cli_with_and_without_the_private_ca(tls_fake, ca_file, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    base = {name: "" for name in CA_VARIABLES}
    cases = {
        "no CA": ([], {}),
        "--ca-cert": (["--ca-cert", str(ca_file)], {}),
        "CVAT_CA_CERT": ([], {"CVAT_CA_CERT": str(ca_file)}),
        "REQUESTS_CA_BUNDLE": ([], {"REQUESTS_CA_BUNDLE": str(ca_file)}),
        "SSL_CERT_FILE": ([], {"SSL_CERT_FILE": str(ca_file)}),
        "missing --ca-cert": (["--ca-cert", str(tmp_path / "missing.pem")], {}),
    }
    running = {
        name: subprocess.Popen(AUTOLABEL + ["cvat", "status", *args], env=cvat_env(tls_fake, store, **{**base, **env}),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, env) in cases.items()
    }
    results = {name: (p.wait(timeout=120), *p.communicate()) for name, p in running.items()}
    for name in ("--ca-cert", "CVAT_CA_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        code, out, err = results[name]
        assert code == 0, (name, out, err)
        assert f"CVAT tasks on {tls_fake.url}" in out and "TLS verification is off" not in err
    for name, expected in (("no CA", "TLS certificate is not trusted"), ("missing --ca-cert", "--ca-cert '")):
        code, out, err = results[name]
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, err)
        assert "Traceback" not in out + err
