"""Replay the recorded golden exchanges against a fake server and report every difference.

The JSON exchanges of ``/work/shared/cvat_golden/<version>/`` (copies in ``golden_data/``:
flows 01–07, 09, 10 up to the annotation import, and 11 for 2.54) are sent again, in order,
over raw HTTP (no SDK, no retries) to a fresh ``FakeCvat`` of the same version. Binary
requests (the multipart upload of flow 03, the TUS chunks of flow 10) are rebuilt from their
descriptions with images of the recorded sizes, padded to the recorded lengths; recorded
TUS upload ids are mapped to the fake's. Credentials are replayed like a client would: the
login key (``Token``), the personal access token created in flow 01 (``Bearer``), per-user
session cookies with ``X-CSRFToken``; a request the server answered with 401 is sent with a
bogus credential of the same scheme, a login answered with 400 with a wrong password.

Before replaying 2.17, the server gets the state the recording server already had (its
other users, and id sequences continuing where the recorded ids start), so ids line up.

Compared per exchange: status, content type, Location/WWW-Authenticate/Content-Disposition/
TUS headers, Set-Cookie names, and the body: objects must have the same keys, lists the same
length (items paired by ``id``/``spec_id``), scalars the same value, except timestamps and
secrets; absolute URLs are compared with the recorded host replaced by the fake's. Binary
bodies are compared by content type, image format/size and zip entry names. How many
``started`` polls of a background request a client sees is timing, so those are compared
without their message/progress.
"""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import urllib3
from PIL import Image

from tests.fake_cvat.server import FakeCvat

GOLDEN_DIR = Path(__file__).parent / "golden_data"
"""Copies of the replayed flow files of ``/work/shared/cvat_golden/{2.17,2.54}`` (see their README)."""
REPLAYED_FLOWS = (
    "01_about_login_self",
    "02_create_project_labels",
    "03_create_task_upload_data",
    "04_jobs_labels_meta_frames",
    "05_annotations_put_patch_get",
    "06_job_lifecycle_filters",
    "07_errors",
    "09_lambda_without_nuclio",
    "10_tus_upload_data_and_annotations",
    "11_access_token_revoke",
)
TUS_FLOW = "10_tus_upload_data_and_annotations"
"""Replayed up to the annotation ``Upload-Finish``: the fake does not import annotation files."""
_FORWARDED_HEADERS = (
    "upload-start",
    "upload-multiple",
    "upload-finish",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "tus-resumable",
)
_COMPARED_HEADERS = (
    "location",
    "www-authenticate",
    "content-disposition",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "upload-offset",
    "upload-length",
    "upload-filename",
)
_TUS_ID = re.compile(r"(?:\d+_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ADMIN = ("admin", "admin-password-1")
REGISTERED_PASSWORD = "Golden-pass-1"
RECORDED_HOSTS = ("http://127.0.0.1:18080", "http://127.0.0.1:19080")
_SECRET_KEYS = frozenset({"key", "value"})
_VOLATILE_KEYS = frozenset({"last_login", "date_joined"})
SEEDS_217 = {
    "project": 9,
    "label": 27,
    "attribute": 10,
    "task": 12,
    "data": 12,
    "job": 23,
    "tag": 2,
    "shape": 83,
    "track": 2,
    "tracked_shape": 4,
}


@dataclass
class _Identity:
    cookies: dict[str, str] = field(default_factory=dict)
    token: str | None = None


@dataclass
class Replay:
    """Client-side state while replaying one version's flows."""

    server: FakeCvat
    http: urllib3.PoolManager = field(default_factory=lambda: urllib3.PoolManager(retries=False))
    identities: dict[str, _Identity] = field(default_factory=dict)
    current_user: str = ADMIN[0]
    access_token: str | None = None
    problems: list[str] = field(default_factory=list)
    replayed: int = 0
    upload_ids: dict[str, str] = field(default_factory=dict)
    """Recorded TUS upload id → the fake's."""
    upload_content: dict[str, bytes] = field(default_factory=dict)
    """Recorded TUS upload id → the bytes sent for it."""
    upload_images: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Recorded TUS upload id → (width, height) of the recorded image."""

    def map_ids(self, text: str) -> str:
        """Recorded TUS upload ids in ``text`` replaced by the fake's."""
        return _TUS_ID.sub(lambda m: self.upload_ids.get(m.group(0), m.group(0)), text)

    def identity(self, username: str | None = None) -> _Identity:
        return self.identities.setdefault(username or self.current_user, _Identity())


def load_flow(version: str, flow: str) -> list[dict]:
    """The recorded exchanges of one flow file."""
    return json.loads((GOLDEN_DIR / version / f"{flow}.json").read_text())


def prepare_server(version: str) -> FakeCvat:
    """A started fake with the state the recording server had before the flows ran."""
    server = FakeCvat(version=version)
    server.add_user(*ADMIN, is_admin=True)
    if version == "2.17":
        users = load_flow("2.17", "06_job_lifecycle_filters")[0]["response"]["body"]["results"]
        for user in sorted(users, key=lambda u: u["id"]):
            if user["username"] != ADMIN[0]:
                seeded = server.add_user(
                    user["username"],
                    "unused-password",
                    email=user["email"],
                    first_name=user["first_name"],
                    last_name=user["last_name"],
                )
                seeded.last_login = server.db.now()
        for table, last_id in SEEDS_217.items():
            server.db.advance_sequence(table, last_id)
    return server.start()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, height % 256, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(description: dict) -> tuple[bytes, str]:
    fields = []
    for part in description["parts"]:
        if "filename" in part:
            image = part["image"]
            name = part["filename"].replace("<client_dir>", "/tmp/client")
            fields.append((part["name"], (name, _png(image["width"], image["height"]), part["content_type"])))
        else:
            fields.append((part["name"], part["value"]))
    return urllib3.encode_multipart_formdata(fields)


def _credentials(replay: Replay, exchange: dict) -> dict[str, str]:
    """Headers that authenticate this request the way the recorded client did."""
    request, status = exchange["request"], exchange["response"]["status"]
    recorded = request["headers"]
    headers: dict[str, str] = {}
    scheme = recorded.get("authorization", "").split(" ")[0]
    if scheme:
        if status == 401:
            bogus = {"Basic": base64.b64encode(b"admin:wrong-password").decode()}.get(scheme, "0" * 40)
            headers["Authorization"] = f"{scheme} {bogus}"
        elif scheme == "Token":
            headers["Authorization"] = f"Token {replay.identity().token}"
        elif scheme == "Bearer":
            headers["Authorization"] = f"Bearer {replay.access_token}"
        elif scheme == "Basic":
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
    if "cookie" in recorded:
        names = [c.split("=")[0].strip() for c in recorded["cookie"].split(";")]
        jar = replay.identity().cookies
        cookies = [f"{name}={jar[name]}" for name in names if name in jar]
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        if "x-csrftoken" in recorded and "csrftoken" in jar:
            headers["X-CSRFToken"] = jar["csrftoken"]
    if "origin" in recorded:
        headers["Origin"] = replay.server.url
    return headers


def _request_body(replay: Replay, exchange: dict, headers: dict[str, str]) -> bytes | None:
    request, status = exchange["request"], exchange["response"]["status"]
    body = request.get("body")
    if body is None:
        return None
    if isinstance(body, dict) and "_multipart" in body:
        payload, content_type = _multipart(body["_multipart"])
        headers["Content-Type"] = content_type
        return payload
    if isinstance(body, dict) and "_binary" in body:
        recorded_id = request["path"].rstrip("/").rsplit("/", 1)[-1]
        offset = int(request["headers"]["upload-offset"])
        headers["Content-Type"] = request["headers"]["content-type"]
        return replay.upload_content[recorded_id][offset : offset + body["_binary"]["size"]]
    body = json.loads(json.dumps(body))
    path = request["path"].rstrip("/")
    if path == "/api/auth/login":
        username = body.get("username")
        known = ADMIN[1] if username == ADMIN[0] else REGISTERED_PASSWORD
        body["password"] = known if status == 200 or status == 403 else "wrong-password"
    elif path == "/api/auth/register":
        body["password1"] = body["password2"] = REGISTERED_PASSWORD
    headers.setdefault("Content-Type", request["headers"].get("content-type", "application/json"))
    return json.dumps(body).encode()


def _remember(replay: Replay, exchange: dict, response: urllib3.BaseHTTPResponse) -> None:
    """Keep what a client keeps: session cookies, login keys, the access token."""
    path = exchange["request"]["path"].rstrip("/")
    if response.status >= 300:
        return
    data = json.loads(response.data) if response.headers.get("Content-Type", "").endswith("json") else None
    if path in ("/api/auth/login", "/api/auth/register"):
        replay.current_user = exchange["request"]["body"]["username"]
        replay.identity().cookies = {}
        replay.identity().token = data.get("key")
    elif path == "/api/auth/access_tokens" and exchange["request"]["method"] == "POST":
        replay.access_token = data["value"]
    jar = SimpleCookie()
    for value in response.headers.getlist("Set-Cookie"):
        jar.load(value)
    replay.identity().cookies.update({name: morsel.value for name, morsel in jar.items()})


def _normalize_url(value: str, server: FakeCvat) -> str:
    for host in RECORDED_HOSTS:
        if value.startswith(host):
            return server.url + value[len(host) :]
    return value


def _pair(golden: list, ours: list) -> list[tuple]:
    for key in ("id", "spec_id"):
        if (
            golden
            and all(isinstance(g, dict) and key in g for g in golden)
            and all(isinstance(o, dict) and key in o for o in ours)
        ):
            by_key = {o[key]: o for o in ours}
            return [(g, by_key.get(g[key])) for g in golden]
    return list(zip(golden, ours))


def _diff(golden, ours, where: str, replay: Replay, out: list[str]) -> None:
    key = where.rsplit(".", 1)[-1]
    if isinstance(golden, dict):
        if not isinstance(ours, dict):
            out.append(f"{where}: expected an object, got {ours!r:.80}")
            return
        if set(golden) != set(ours):
            out.append(
                f"{where}: keys differ: missing {sorted(set(golden) - set(ours))}, "
                f"extra {sorted(set(ours) - set(golden))}"
            )
        for name in golden.keys() & ours.keys():
            _diff(golden[name], ours[name], f"{where}.{name}", replay, out)
    elif isinstance(golden, list):
        if not isinstance(ours, list):
            out.append(f"{where}: expected a list, got {ours!r:.80}")
            return
        if len(golden) != len(ours):
            out.append(f"{where}: {len(golden)} items expected, got {len(ours)}")
        for index, (g, o) in enumerate(_pair(golden, ours)):
            if o is None:
                out.append(f"{where}[{index}]: no item with the recorded id")
            else:
                _diff(g, o, f"{where}[{index}]", replay, out)
    elif key.endswith("date") or key in _VOLATILE_KEYS or (key in _SECRET_KEYS and golden == "<redacted>"):
        if (golden is None) != (ours is None):
            out.append(f"{where}: expected {golden!r}, got {ours!r}")
    elif isinstance(golden, str) and isinstance(ours, str):
        if _normalize_url(golden, replay.server) != ours:
            out.append(f"{where}: expected {golden!r:.120}, got {ours!r:.120}")
    elif (
        golden != ours
        or type(golden) is not type(ours)
        and not (isinstance(golden, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool))
    ):
        out.append(f"{where}: expected {golden!r:.120}, got {ours!r:.120}")


def _compare_binary(description: dict, data: bytes, out: list[str], where: str) -> None:
    if "image" in description:
        with Image.open(io.BytesIO(data)) as image:
            got = {"format": image.format, "width": image.width, "height": image.height}
        wanted = {k: description["image"][k] for k in got}
        if got != wanted:
            out.append(f"{where}: image {got} != recorded {wanted}")
    if "zip_entries" in description:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
        wanted = [entry["name"] for entry in description["zip_entries"]]
        if names != wanted:
            out.append(f"{where}: zip entries {names} != recorded {wanted}")


def _compare(replay: Replay, exchange: dict, response: urllib3.BaseHTTPResponse, label: str) -> None:
    recorded = exchange["response"]
    out: list[str] = []
    if response.status != recorded["status"]:
        out.append(f"status {response.status} != recorded {recorded['status']}: {response.data[:200]!r}")
        replay.problems.extend(f"{label}: {line}" for line in out)
        return
    wanted_type = recorded["headers"].get("content-type", "").split(";")[0]
    got_type = (response.headers.get("Content-Type") or "").split(";")[0]
    if wanted_type != got_type:
        out.append(f"content-type {got_type!r} != recorded {wanted_type!r}")
    for name in _COMPARED_HEADERS:
        wanted = recorded["headers"].get(name)
        got = response.headers.get(name)
        if wanted is not None and replay.map_ids(_normalize_url(wanted, replay.server)) != got:
            out.append(f"header {name}: {got!r} != recorded {wanted!r}")
    wanted_cookies = sorted(c.split("=")[0] for c in recorded["headers"].get("set-cookie", []))
    got_cookies = sorted(c.split("=")[0] for c in response.headers.getlist("Set-Cookie"))
    if wanted_cookies != got_cookies:
        out.append(f"set-cookie names {got_cookies} != recorded {wanted_cookies}")
    body = recorded.get("body")
    if isinstance(body, dict) and "_binary" in body:
        _compare_binary(body["_binary"], response.data, out, "body")
    elif isinstance(body, dict) and "_text" in body:
        text = response.data.decode("utf-8", "replace")
        if exchange["request"]["path"].startswith("/api/lambda"):
            pass
        elif text != body["_text"]:
            out.append(f"text body {text[:120]!r} != recorded {body['_text'][:120]!r}")
    elif body is None:
        if response.data:
            out.append(f"expected no body, got {response.data[:80]!r}")
    else:
        ours = json.loads(response.data) if response.data else None
        if exchange["request"]["path"].startswith("/api/lambda") and isinstance(body, str):
            if not (isinstance(ours, str) and ours.startswith("HTTPConnectionPool(")):
                out.append(f"expected the Nuclio connection error string, got {ours!r:.120}")
        else:
            _diff(body, ours, "body", replay, out)
    replay.problems.extend(f"{label}: {line}" for line in out)


def _scan_uploads(replay: Replay, exchanges: list[dict]) -> None:
    for exchange in exchanges:
        body = exchange["request"].get("body")
        if exchange["request"]["method"] == "PATCH" and isinstance(body, dict) and "image" in body.get("_binary", {}):
            recorded_id = exchange["request"]["path"].rstrip("/").rsplit("/", 1)[-1]
            image = body["_binary"]["image"]
            replay.upload_images.setdefault(recorded_id, (image["width"], image["height"]))


def _settle_request_poll(
    replay: Replay, exchange: dict, response: urllib3.BaseHTTPResponse, url: str, headers: dict
) -> urllib3.BaseHTTPResponse:
    """Polls of ``/api/requests/<id>``: how many ``started`` states a client sees is timing.

    A recorded ``started`` poll is compared without its message/progress (made equal to
    ours); when the recording already reads ``finished``, poll on until the fake does too.
    """
    recorded = exchange["response"].get("body")
    if not (exchange["request"]["path"].startswith("/api/requests/") and isinstance(recorded, dict)):
        return response
    for _ in range(5):
        ours = json.loads(response.data) if response.status == 200 else None
        if not ours or recorded.get("status") != "finished" or ours.get("status") == "finished":
            break
        response = replay.http.request("GET", url, headers=headers)
    if recorded.get("status") == "started" and ours and ours.get("status") == "started":
        recorded.update(message=ours["message"], progress=ours["progress"])
    return response


def _register_upload(replay: Replay, exchange: dict, response: urllib3.BaseHTTPResponse) -> None:
    """Map a recorded TUS upload id to the fake's and make the bytes to send for it."""
    recorded_location = exchange["response"]["headers"].get("location", "")
    if exchange["response"]["status"] != 201 or not _TUS_ID.search(recorded_location):
        return
    recorded_id = recorded_location.rsplit("/", 1)[-1]
    replay.upload_ids[recorded_id] = (response.headers.get("Location") or "").rsplit("/", 1)[-1]
    length = int(exchange["request"]["headers"]["upload-length"])
    if recorded_id in replay.upload_images:
        content = _png(*replay.upload_images[recorded_id])
    else:
        content = b"<annotations/>"
    replay.upload_content[recorded_id] = content.ljust(length, b"\0" if content.startswith(b"\x89PNG") else b" ")


def replay_version(version: str) -> Replay:
    """Replay all flows of ``version`` against a fresh fake; ``.problems`` lists differences."""
    server = prepare_server(version)
    replay = Replay(server)
    try:
        for flow in REPLAYED_FLOWS:
            path = GOLDEN_DIR / version / f"{flow}.json"
            if not path.exists():
                continue
            replay.current_user = ADMIN[0]
            exchanges = json.loads(path.read_text())
            _scan_uploads(replay, exchanges)
            for exchange in exchanges:
                request = exchange["request"]
                headers = _credentials(replay, exchange)
                for name in _FORWARDED_HEADERS:
                    if name in request["headers"]:
                        headers[name.title()] = request["headers"][name]
                body = _request_body(replay, exchange, headers)
                query = {
                    k: [replay.map_ids(v) for v in (vs if isinstance(vs, list) else [vs])]
                    for k, vs in (request.get("query") or {}).items()
                }
                target = replay.map_ids(request["path"]) + ("?" + urlencode(query, doseq=True) if query else "")
                response = replay.http.request(request["method"], server.url + target, body=body, headers=headers)
                response = _settle_request_poll(replay, exchange, response, server.url + target, headers)
                _register_upload(replay, exchange, response)
                label = f"{version}/{flow}#{exchange['seq']} {request['method']} {request['path']}"
                _compare(replay, exchange, response, label)
                _remember(replay, exchange, response)
                replay.replayed += 1
                if flow == TUS_FLOW and "upload-finish" in request["headers"] and "/annotations" in request["path"]:
                    break
        server.raise_errors()
    finally:
        server.stop()
    return replay
