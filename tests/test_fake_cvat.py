"""The fake CVAT server, driven by the real cvat-sdk.

With the venv's cvat-sdk (2.80) the tests run against ``FakeCvat("2.54")``. With cvat-sdk
2.17 first on the path (``PYTHONPATH=.cache/sdk-2.17``) the same flows run against
``FakeCvat("2.17")``: the module picks the fake's version from ``cvat_sdk.__version__``.
The golden replay tests are raw HTTP and run for both versions either way.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path

import cvat_sdk
import cvat_sdk.core.exceptions
import numpy as np
import pytest
import urllib3
from cvat_sdk import Client, models
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import Config
from cvat_sdk.core.helpers import get_paginated_collection
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_sdk.core.proxies.tasks import ResourceType
from cvat_sdk.datasets import TaskDataset
from PIL import Image

from tests.fake_cvat import FakeCvat, FakeCvatError, FaultPlan
from tests.fake_cvat.fixtures import (  # noqa: F401 - pytest fixtures used by name
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    VERSION_ENV,
    fake_cvat,
    fake_cvat_217,
)
from tests.fake_cvat.golden import replay_version
from tests.fake_cvat.state import iso

OLD_SDK = cvat_sdk.__version__.startswith("2.17.")
# how a failed background request reaches the caller: 2.17 raises ApiException, 2.80 its own type
REQUEST_FAILED = (ApiException, getattr(cvat_sdk.core.exceptions, "BackgroundRequestException", ApiException))
FAKE_VERSION = "2.17" if OLD_SDK else "2.54"
IMAGE_SIZES = [(320, 240), (640, 480), (400, 300), (256, 192)]
LABELS = [
    {
        "name": "car",
        "type": "rectangle",
        "color": "#ff0000",
        "attributes": [
            {
                "name": "speed",
                "mutable": True,
                "input_type": "number",
                "values": ["0", "100", "5"],
                "default_value": "0",
            },
            {
                "name": "parked",
                "mutable": False,
                "input_type": "checkbox",
                "values": ["false"],
                "default_value": "false",
            },
            {
                "name": "color",
                "mutable": False,
                "input_type": "select",
                "values": ["red", "green", "blue"],
                "default_value": "red",
            },
        ],
    },
    {"name": "road", "type": "polygon", "color": "#00ff00", "attributes": []},
    {"name": "sky", "type": "mask", "color": "#0000ff", "attributes": []},
    {
        "name": "person",
        "type": "skeleton",
        "attributes": [],
        "sublabels": [{"name": "head", "type": "points"}, {"name": "foot", "type": "points"}],
        "svg": '<circle data-type="element node" data-element-id="1" data-node-id="1" data-label-name="head">'
        '</circle><circle data-type="element node" data-element-id="2" data-node-id="2" '
        'data-label-name="foot"></circle>',
    },
]
# A disc of radius 30 in the box (70, 50)-(130, 110), as CVAT RLE (recorded in golden flow 05).
GOLDEN_DISC_RLE = [
    30.0,
    1.0,
    53.0,
    15.0,
    43.0,
    21.0,
    37.0,
    27.0,
    33.0,
    29.0,
    30.0,
    33.0,
    26.0,
    37.0,
    23.0,
    39.0,
    21.0,
    41.0,
    19.0,
    43.0,
    17.0,
    45.0,
    15.0,
    47.0,
    13.0,
    49.0,
    12.0,
    49.0,
    11.0,
    51.0,
    10.0,
    51.0,
    9.0,
    53.0,
    7.0,
    55.0,
    6.0,
    55.0,
    6.0,
    55.0,
    5.0,
    57.0,
    4.0,
    57.0,
    4.0,
    57.0,
    3.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    1.0,
    61.0,
    1.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    2.0,
    59.0,
    3.0,
    57.0,
    4.0,
    57.0,
    4.0,
    57.0,
    5.0,
    55.0,
    6.0,
    55.0,
    6.0,
    55.0,
    7.0,
    53.0,
    9.0,
    51.0,
    10.0,
    51.0,
    11.0,
    49.0,
    12.0,
    49.0,
    13.0,
    47.0,
    15.0,
    45.0,
    17.0,
    43.0,
    19.0,
    41.0,
    21.0,
    39.0,
    23.0,
    37.0,
    26.0,
    33.0,
    30.0,
    29.0,
    33.0,
    27.0,
    37.0,
    21.0,
    43.0,
    15.0,
    53.0,
    1.0,
    30.0,
    70.0,
    50.0,
    130.0,
    110.0,
]


# ---- fixtures and helpers --------------------------------------------------------------------------
@pytest.fixture
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeCvat:
    """The fake of the version the installed cvat-sdk talks to."""
    if OLD_SDK:
        return request.getfixturevalue("fake_cvat_217")
    monkeypatch.setenv(VERSION_ENV, FAKE_VERSION)
    return request.getfixturevalue("fake_cvat")


def make_client(
    server: FakeCvat,
    tmp_path: Path,
    *,
    login: tuple[str, str] | None = (ADMIN_USERNAME, ADMIN_PASSWORD),
    check_version: bool = True,
) -> Client:
    config = Config(status_check_period=0.01, cache_dir=tmp_path / "sdk-cache")
    client = Client(server.url, config=config, check_server_version=check_version)
    if login is not None:
        client.login(login)
    return client


@pytest.fixture
def client(server: FakeCvat, tmp_path: Path) -> Client:
    with make_client(server, tmp_path) as sdk_client:
        yield sdk_client


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Four PNGs of different sizes and contents."""
    rng = np.random.default_rng(7)
    paths = []
    for index, (width, height) in enumerate(IMAGE_SIZES):
        ys, xs = np.mgrid[0:height, 0:width]
        pixels = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, index * 60)], axis=-1)
        pixels[:40, :40] = rng.integers(0, 256, (40, 40, 3))  # a noisy corner: a few KiB per PNG
        path = tmp_path / f"frame_{index:02d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def project(client: Client):
    return client.projects.create(spec={"name": "fake-project", "labels": LABELS})


@pytest.fixture
def task(client: Client, project, images: list[Path]):
    return client.tasks.create_from_data(
        spec={"name": "fake-task", "project_id": project.id, "segment_size": 2},
        resources=images,
        resource_type=ResourceType.LOCAL,
        data_params={"image_quality": 70, "sorting_method": "natural"},
    )


def labels_by_name(task) -> dict:
    return {label.name: label for label in task.get_labels()}


def error_body(err: ApiException):
    return json.loads(err.body)


def raw(server: FakeCvat, method: str, path: str, *, headers: dict | None = None, body=None):
    """A request with no SDK and no retries."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    return urllib3.PoolManager(retries=False).request(method, server.url + path, body=data, headers=all_headers)


def admin_basic() -> dict:
    return urllib3.make_headers(basic_auth=f"{ADMIN_USERNAME}:{ADMIN_PASSWORD}")


def rectangle(frame: int, label_id: int, points, **extra) -> models.LabeledShapeRequest:
    return models.LabeledShapeRequest(type="rectangle", frame=frame, label_id=label_id, points=points, **extra)


def disc_mask_points() -> list[float]:
    if OLD_SDK:  # cvat_sdk.masks appeared after 2.17
        return GOLDEN_DISC_RLE
    from cvat_sdk.masks import encode_mask

    return encode_mask(_disc_bitmap(), bbox=[70, 50, 131, 111])


def _disc_bitmap() -> np.ndarray:
    ys, xs = np.mgrid[0:300, 0:400]
    return (xs - 100) ** 2 + (ys - 80) ** 2 <= 30**2


# ---- server identity and authentication ------------------------------------------------------------
def test_about_reports_what_the_sdk_version_needs(server: FakeCvat, client: Client) -> None:
    about, _ = client.api_client.server_api.retrieve_about()
    assert about.version == server.profile.version
    if not OLD_SDK:
        assert about.logo_url == f"{server.url}/static/logo.svg"


def test_current_sdk_cannot_read_the_2_17_about(fake_cvat_217: FakeCvat, tmp_path: Path) -> None:  # noqa: F811
    body = json.loads(raw(fake_cvat_217, "GET", "/api/server/about").data)
    assert body["version"] == "2.17.0" and "logo_url" not in body and "subtitle" not in body
    if OLD_SDK:
        client = make_client(fake_cvat_217, tmp_path)
        assert client.users.retrieve_current_user().username == ADMIN_USERNAME
    else:
        with pytest.raises(TypeError, match="logo_url"):
            Client(fake_cvat_217.url)


def test_password_login_opens_a_session(server: FakeCvat, client: Client, tmp_path: Path) -> None:
    me = client.users.retrieve_current_user()
    assert me.username == ADMIN_USERNAME and me.is_superuser and me.groups == ["admin"]
    assert {"sessionid", "csrftoken"} <= set(client.api_client.cookies)
    assert server.request_log[-1].username == ADMIN_USERNAME
    with pytest.raises(ApiException) as err:
        make_client(server, tmp_path, login=(ADMIN_USERNAME, "wrong"), check_version=False)
    assert err.value.status == 400
    assert error_body(err.value) == {"non_field_errors": ["Unable to log in with provided credentials."]}


def test_unauthenticated_and_bad_credentials_get_401(server: FakeCvat, tmp_path: Path) -> None:
    anonymous = make_client(server, tmp_path, login=None)
    with pytest.raises(ApiException) as err:
        anonymous.tasks.list()
    assert err.value.status == 401
    assert err.value.headers["WWW-Authenticate"] == "Token"
    assert error_body(err.value) == {"detail": "Authentication credentials were not provided."}
    assert json.loads(raw(server, "GET", "/api/tasks", headers={"Authorization": "Token nope"}).data) == {
        "detail": "Invalid token."
    }
    bad_basic = urllib3.make_headers(basic_auth="admin:nope")
    assert json.loads(raw(server, "GET", "/api/tasks", headers=bad_basic).data) == {
        "detail": "Invalid username/password."
    }
    assert raw(server, "GET", "/api/tasks", headers=admin_basic()).status == 200


def test_token_authentication(server: FakeCvat, client: Client, tmp_path: Path) -> None:
    legacy = raw(server, "GET", "/api/users/self", headers={"Authorization": f"Token {server.legacy_token('admin')}"})
    assert json.loads(legacy.data)["username"] == ADMIN_USERNAME
    if OLD_SDK:
        with pytest.raises(FakeCvatError, match="no personal access tokens"):
            server.mint_token(ADMIN_USERNAME)
        response = raw(server, "GET", "/api/users/self", headers={"Authorization": "Bearer whatever"})
        assert response.status == 401
        assert json.loads(response.data) == {"detail": "Authentication credentials were not provided."}
        return
    from cvat_sdk.core.client import AccessTokenCredentials

    token_client = make_client(server, tmp_path, login=None)
    token_client.login(AccessTokenCredentials(server.mint_token(ADMIN_USERNAME)))
    assert token_client.users.retrieve_current_user().username == ADMIN_USERNAME
    created, _ = client.api_client.auth_api.create_access_tokens(
        models.AccessTokenWriteRequest(name="ci", read_only=False)
    )
    second = make_client(server, tmp_path, login=None)
    second.login(AccessTokenCredentials(created.value))
    own, _ = second.api_client.auth_api.retrieve_access_tokens_self()
    assert own.id == created.id and own.last_used_date is not None
    with pytest.raises(ApiException) as err:
        second.api_client.auth_api.destroy_access_tokens(created.id)
    assert err.value.status == 403
    client.api_client.auth_api.destroy_access_tokens(created.id)
    with pytest.raises(ApiException) as err:
        second.users.retrieve_current_user()
    assert err.value.status == 401 and error_body(err.value) == {"detail": "Invalid token."}


def test_read_only_token_cannot_write(server: FakeCvat) -> None:
    if OLD_SDK:
        assert not server.profile.access_tokens
        return
    headers = {"Authorization": f"Bearer {server.mint_token(ADMIN_USERNAME, read_only=True)}"}
    assert raw(server, "GET", "/api/projects", headers=headers).status == 200
    assert raw(server, "POST", "/api/projects", headers=headers, body={"name": "x"}).status == 403


# ---- projects, labels, tasks, data -----------------------------------------------------------------
def test_project_labels_get_ids_sublabels_and_rewritten_svg(client: Client, project) -> None:
    assert [p.id for p in client.projects.list()] == [project.id]
    assert client.projects.retrieve(project.id).name == "fake-project"
    labels = project.get_labels()
    assert [label.name for label in labels] == ["car", "road", "sky", "person"]
    assert [label.id for label in labels] == sorted(label.id for label in labels)
    car, person = labels[0], labels[3]
    assert [a.name for a in car.attributes] == ["speed", "parked", "color"]
    assert [a.default_value for a in car.attributes] == ["0", "false", "red"]
    assert [(s.name, s.id) for s in person.sublabels] == [("head", person.id + 1), ("foot", person.id + 2)]
    assert f'data-label-id="{person.id + 1}"' in person.svg and "data-label-name" not in person.svg
    page, _ = client.api_client.labels_api.list(parent_id=person.id)
    assert page.count == 0
    head, _ = client.api_client.labels_api.retrieve(person.id + 1)
    assert head.parent_id == person.id and head.has_parent


def test_create_from_data_makes_jobs_per_segment(server: FakeCvat, client: Client, task, images: list[Path]) -> None:
    assert (task.size, task.mode, task.overlap, task.segment_size) == (4, "annotation", 0, 2)
    assert task.data_chunk_size == 72 and task.data_original_chunk_type == "imageset"
    jobs = sorted(task.get_jobs(), key=lambda job: job.start_frame)
    assert [(job.start_frame, job.stop_frame) for job in jobs] == [(0, 1), (2, 3)]
    assert jobs[0].id < jobs[1].id
    meta = task.get_meta()
    assert [(f.name, f.width, f.height) for f in meta.frames] == [
        (path.name, w, h) for path, (w, h) in zip(images, IMAGE_SIZES)
    ]
    uploads = [r for r in server.request_log if r.method == "POST" and r.path == f"/api/tasks/{task.id}/data/"]
    assert [r.status for r in uploads] == [202, 200, 202]
    polls = [r for r in server.request_log if r.path.startswith("/api/requests/")]
    assert len(polls) == len(server.profile.create_task_polls) + 1


def test_standalone_task_owns_its_labels_and_can_be_deleted(
    server: FakeCvat, client: Client, images: list[Path]
) -> None:
    task = client.tasks.create_from_data(
        spec={"name": "standalone", "labels": [{"name": "cat", "type": "rectangle"}]},
        resources=images[:1],
        data_params={"image_quality": 50},
    )
    (label,) = task.get_labels()
    assert (label.name, label.task_id, task.project_id, task.segment_size) == ("cat", task.id, None, 1)
    assert [t.id for t in client.tasks.list()] == [task.id]
    job_ids = [job.id for job in task.get_jobs()]
    task.remove()
    with pytest.raises(ApiException) as err:
        client.tasks.retrieve(task.id)
    assert err.value.status == 404
    assert not set(job_ids) & set(server.db.jobs)


def test_shared_files_and_refused_remote_files(server: FakeCvat, client: Client, project, images: list[Path]) -> None:
    server.share_dir = str(images[0].parent)
    server.instant_requests = True
    task = client.tasks.create_from_data(
        spec={"name": "shared", "project_id": project.id},
        resources=[p.name for p in reversed(images)],
        resource_type=ResourceType.SHARE,
        data_params={"image_quality": 70},
    )
    assert [f.name for f in task.get_meta().frames] == [p.name for p in images]  # lexicographical order
    assert len([r for r in server.request_log if r.path.startswith("/api/requests/")]) == 1
    with pytest.raises(REQUEST_FAILED, match="remote_files are not supported"):
        client.tasks.create_from_data(
            spec={"name": "remote", "project_id": project.id},
            resources=["http://example.com/a.png"],
            resource_type=ResourceType.REMOTE,
            data_params={"image_quality": 70},
        )


def test_big_files_go_through_tus(
    server: FakeCvat, client: Client, project, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cvat_sdk.core import uploading

    monkeypatch.setattr(uploading.DataUploader.__init__, "__kwdefaults__", {"max_request_size": 1})
    if OLD_SDK:
        monkeypatch.setattr(uploading.Uploader, "_CHUNK_SIZE", 2048)
    else:
        monkeypatch.setattr(uploading, "TUS_CHUNK_SIZE", 2048)
    task = client.tasks.create_from_data(
        spec={"name": "tus", "project_id": project.id, "segment_size": 2},
        resources=images,
        data_params={"image_quality": 70},
    )
    tus_patches = [r for r in server.request_log if r.method == "PATCH" and "/data/" in r.path]
    assert len(tus_patches) > len(images) and all(r.status == 204 for r in tus_patches)
    for index, path in enumerate(images):
        assert task.get_frame(index, quality="original").read() == path.read_bytes()


def test_annotation_import_is_refused_with_a_clear_reason(client: Client, task, tmp_path: Path) -> None:
    xml = tmp_path / "annotations.xml"
    xml.write_text("<annotations/>")
    with pytest.raises(REQUEST_FAILED, match="cannot import annotations"):
        task.import_annotations("CVAT 1.1", xml)


def test_frames_chunks_and_job_data(server: FakeCvat, client: Client, task, images: list[Path]) -> None:
    assert task.get_frame(1, quality="original").read() == images[1].read_bytes()
    compressed = Image.open(task.get_frame(3, quality="compressed"))
    assert (compressed.format, compressed.size) == ("JPEG", IMAGE_SIZES[3])
    buffer = io.BytesIO()
    task.download_chunk(0, buffer, quality="original")
    with zipfile.ZipFile(buffer) as chunk:
        assert chunk.namelist() == [f"{i:06d}.png" for i in range(4)]
        assert [chunk.read(name) for name in chunk.namelist()] == [p.read_bytes() for p in images]
    buffer = io.BytesIO()
    task.download_chunk(0, buffer, quality="compressed")
    assert zipfile.ZipFile(buffer).namelist() == [f"{i:06d}.jpeg" for i in range(4)]
    with pytest.raises(ApiException) as err:
        task.download_chunk(1, io.BytesIO(), quality="compressed")
    assert err.value.status == 400 and error_body(err.value) == server.profile.chunk_out_of_range(1, 0)
    second_job = sorted(task.get_jobs(), key=lambda job: job.start_frame)[1]
    assert second_job.get_frame(2, quality="original").read() == images[2].read_bytes()
    with pytest.raises(ApiException) as err:
        second_job.get_frame(0, quality="compressed")
    assert err.value.status == 400 and error_body(err.value) == server.profile.frame_outside_job(0)
    job_meta = second_job.get_meta()
    assert (job_meta.start_frame, job_meta.stop_frame, [f.name for f in job_meta.frames]) == (
        2,
        3,
        [images[2].name, images[3].name],
    )
    assert Image.open(task.get_preview()).format == "JPEG"


def test_task_dataset_reads_chunks_and_annotations(server: FakeCvat, client: Client, task, images: list[Path]) -> None:
    car = labels_by_name(task)["car"]
    task.set_annotations(models.LabeledDataRequest(shapes=[rectangle(2, car.id, [1.0, 2.0, 30.0, 40.0])]))
    dataset = TaskDataset(client, task.id)
    assert [s.frame_name for s in dataset.samples] == [p.name for p in images]
    for sample, path in zip(dataset.samples, images):
        loaded = np.asarray(sample.media.load_image().convert("RGB"))
        assert np.array_equal(loaded, np.asarray(Image.open(path).convert("RGB")))
    assert [len(s.annotations.shapes) for s in dataset.samples] == [0, 0, 1, 0]
    assert any("type=chunk" in r.query for r in server.request_log if r.path.startswith(f"/api/tasks/{task.id}/data"))


# ---- annotations -------------------------------------------------------------------------------------
def test_annotations_put_patch_get_remove(server: FakeCvat, client: Client, task) -> None:
    labels = labels_by_name(task)
    car, road, sky = labels["car"], labels["road"], labels["sky"]
    speed = car.attributes[0]
    put = models.LabeledDataRequest(
        shapes=[
            rectangle(0, car.id, [10.0, 20.0, 110.0, 120.0], attributes=[models.AttributeValRequest(speed.id, "35")]),
            rectangle(1, car.id, [50.5, 60.25, 200.0, 220.0], rotation=30.0, source="auto"),
            models.LabeledShapeRequest(
                type="polygon", frame=0, label_id=road.id, points=[0.0, 200.0, 160.0, 150.0, 319.0, 200.0]
            ),
            models.LabeledShapeRequest(type="mask", frame=2, label_id=sky.id, points=disc_mask_points()),
        ]
    )
    task.set_annotations(put)
    stored = task.get_annotations()
    assert stored.version == 0
    rect, rotated, polygon, mask = sorted(stored.shapes, key=lambda s: s.id)
    assert {a.spec_id: a.value for a in rect.attributes} == {
        speed.id: "35",
        car.attributes[1].id: "false",
        car.attributes[2].id: "red",
    }
    assert rotated.rotation == 30.0 and rotated.source == "auto" and polygon.group is None
    if not OLD_SDK:
        from cvat_sdk.masks import decode_mask

        assert np.array_equal(decode_mask(mask.points, image_width=400, image_height=300), _disc_bitmap())
    first_job, second_job = sorted(task.get_jobs(), key=lambda job: job.start_frame)
    second_job.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rectangle(3, car.id, [100.0, 100.0, 150.0, 150.0])]),
        action=AnnotationUpdateAction.CREATE,
    )
    first_job.update_annotations(  # frame 3 is outside the first job: dropped silently
        models.PatchedLabeledDataRequest(shapes=[rectangle(3, car.id, [1.0, 1.0, 2.0, 2.0])]),
        action=AnnotationUpdateAction.CREATE,
    )
    assert sorted(s.frame for s in first_job.get_annotations().shapes) == [0, 0, 1]
    assert sorted(s.frame for s in second_job.get_annotations().shapes) == [2, 3]
    rect_update = models.LabeledShapeRequest(**{**rect.to_dict(), "points": [15.0, 25.0, 115.0, 125.0]})
    task.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rect_update]), action=AnnotationUpdateAction.UPDATE
    )
    task.remove_annotations(ids=[polygon.id])
    after = {s.id: s for s in task.get_annotations().shapes}
    assert polygon.id not in after and after[rect.id].points == [15.0, 25.0, 115.0, 125.0]
    assert max(after) > mask.id
    task.remove_annotations()
    assert task.get_annotations().shapes == [] and server.db.shapes(task.id) == []


def test_score_is_dropped_unless_the_fake_is_told_to_keep_it(
    server: FakeCvat, task, images: list[Path], tmp_path: Path
) -> None:
    def send_score(target: FakeCvat, task_id: int, label_id: int) -> dict:
        shape = {"type": "rectangle", "frame": 0, "label_id": label_id, "points": [1, 1, 9, 9], "score": 0.87}
        response = raw(
            target,
            "PATCH",
            f"/api/tasks/{task_id}/annotations?action=create",
            headers=admin_basic(),
            body={"shapes": [shape]},
        )
        assert response.status == 200
        return json.loads(response.data)["shapes"][0]

    assert "score" not in send_score(server, task.id, labels_by_name(task)["car"].id)  # neither 2.17 nor 2.54 keeps it
    assert "score" not in server.db.shapes(task.id)[0]
    with FakeCvat(FAKE_VERSION, shape_score=True) as keeping:
        keeping.add_user(ADMIN_USERNAME, ADMIN_PASSWORD, is_admin=True)
        other = make_client(keeping, tmp_path).tasks.create_from_data(
            spec={"name": "scored", "labels": [{"name": "car", "type": "rectangle"}]},
            resources=images[:1],
            data_params={"image_quality": 70},
        )
        assert send_score(keeping, other.id, other.get_labels()[0].id)["score"] == 0.87


def test_annotation_writes_touch_job_task_and_project(server: FakeCvat, client: Client, project, task) -> None:
    car = labels_by_name(task)["car"]
    first_job, second_job = sorted(task.get_jobs(), key=lambda job: job.start_frame)
    before = {
        "first": first_job.updated_date,
        "second": second_job.updated_date,
        "task": task.updated_date,
        "project": client.projects.retrieve(project.id).updated_date,
    }
    second_job.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rectangle(2, car.id, [1.0, 1.0, 5.0, 5.0])]),
        action=AnnotationUpdateAction.CREATE,
    )
    first_job.fetch(), second_job.fetch(), task.fetch()
    assert second_job.updated_date > before["second"] and first_job.updated_date == before["first"]
    assert task.updated_date > before["task"]
    assert client.projects.retrieve(project.id).updated_date > before["project"]


# ---- jobs -----------------------------------------------------------------------------------------------
def list_jobs(client: Client, **query) -> list:
    return get_paginated_collection(client.api_client.jobs_api.list_endpoint, **query)


def test_job_lifecycle_filters_sort_search_and_pages(server: FakeCvat, client: Client, task) -> None:
    first, second = sorted(task.get_jobs(), key=lambda job: job.start_frame)
    marker = iso(server.db.now())
    admin = client.users.retrieve_current_user()
    first.update({"stage": "validation", "state": "in progress"})
    first.update({"assignee": admin.id})
    second.update({"stage": "acceptance", "state": "completed"})
    assert (first.status, first.assignee.username, second.status) == ("validation", ADMIN_USERNAME, "completed")
    task.fetch()
    assert (task.status, task.jobs.completed, task.jobs.validation) == ("validation", 1, 1)
    ids = lambda jobs: [job.id for job in jobs]
    assert ids(list_jobs(client, task_id=task.id, stage="validation")) == [first.id]
    assert ids(list_jobs(client, task_id=task.id, state="completed")) == [second.id]
    assert ids(list_jobs(client, task_id=task.id, assignee=ADMIN_USERNAME)) == [first.id]
    recent = {"and": [{"==": [{"var": "task_id"}, task.id]}, {">=": [{"var": "updated_date"}, marker]}]}
    assert sorted(ids(list_jobs(client, filter=json.dumps(recent)))) == [first.id, second.id]
    future = {">": [{"var": "updated_date"}, iso(server.db.now() + timedelta(days=1))]}
    assert list_jobs(client, filter=json.dumps(future)) == []
    assert ids(list_jobs(client, task_id=task.id, sort="id")) == [first.id, second.id]
    assert ids(list_jobs(client, task_id=task.id, sort="-updated_date")) == [second.id, first.id]
    assert ids(list_jobs(client, task_id=task.id, search="validation")) == [first.id]
    assert len(list_jobs(client, task_id=task.id, type="annotation")) == 2
    page, _ = client.api_client.jobs_api.list(task_id=task.id, page_size=1)
    assert page.count == 2 and page.next == f"{server.url}/api/jobs?page=2&page_size=1&task_id={task.id}"
    page, _ = client.api_client.jobs_api.list(task_id=task.id, page_size=1, page=2)
    assert page.next is None and page.previous == f"{server.url}/api/jobs?page_size=1&task_id={task.id}"
    second.update({"stage": "annotation"})  # a stage change without a state resets the state
    assert (second.stage, second.state, second.status) == ("annotation", "new", "annotation")
    second.update({"assignee": None})
    assert second.assignee is None
    if not OLD_SDK:  # the newer SDK's lookup helpers build the same JSON-logic filter
        assert sorted(job.id for job in client.jobs.list(task_id=task.id, updated_date__gte=marker)) == [
            first.id,
            second.id,
        ]


def test_job_list_and_patch_errors(server: FakeCvat, client: Client, task) -> None:
    job = task.get_jobs()[0]
    for field in ("stage", "state"):
        response = raw(server, "PATCH", f"/api/jobs/{job.id}", headers=admin_basic(), body={field: "bogus"})
        assert response.status == 400 and json.loads(response.data) == {field: ['"bogus" is not a valid choice.']}
    response = raw(server, "PATCH", f"/api/jobs/{job.id}", headers=admin_basic(), body={"assignee": 999999})
    assert response.status == 500 and response.headers["Content-Type"].startswith("text/html")
    response = raw(server, "GET", "/api/jobs?stage=bogus", headers=admin_basic())
    assert json.loads(response.data) == {"stage": ["Select a valid choice. bogus is not one of the available choices."]}
    with pytest.raises(ApiException) as err:
        list_jobs(client, filter="not json")
    assert error_body(err.value) == server.profile.bad_filter("Expecting value: line 1 column 1 (char 0)")
    assert len(list_jobs(client, task_id=task.id, sort="no_such_field")) == 2


# ---- errors and permissions -----------------------------------------------------------------------------
def test_error_bodies_match_the_server_version(server: FakeCvat, client: Client, task) -> None:
    with pytest.raises(ApiException) as err:
        client.tasks.retrieve(999999)
    assert err.value.status == 404 and error_body(err.value) == server.profile.not_found("Task")
    with pytest.raises(ApiException) as err:
        client.jobs.retrieve(999999)
    assert error_body(err.value) == server.profile.not_found("Job")
    car = labels_by_name(task)["car"]
    bad_label = models.PatchedLabeledDataRequest(shapes=[rectangle(0, 999999, [1.0, 1.0, 5.0, 5.0])])
    with pytest.raises(ApiException) as err:
        task.update_annotations(bad_label, action=AnnotationUpdateAction.CREATE)
    assert err.value.status == 400 and error_body(err.value) == ["label_id `999999` is invalid"]
    with pytest.raises(ApiException) as err:
        task.set_annotations(models.LabeledDataRequest(shapes=[rectangle(0, 999999, [1.0, 1.0, 5.0, 5.0])]))
    assert error_body(err.value) == ["label_id `999999` is invalid"]
    bad_spec = rectangle(0, car.id, [1.0, 1.0, 5.0, 5.0], attributes=[models.AttributeValRequest(999999, "x")])
    with pytest.raises(ApiException) as err:
        task.update_annotations(
            models.PatchedLabeledDataRequest(shapes=[bad_spec]), action=AnnotationUpdateAction.CREATE
        )
    assert error_body(err.value) == ["spec_id `999999` is invalid"]
    task.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rectangle(99, car.id, [1.0, 1.0, 5.0, 5.0])]),
        action=AnnotationUpdateAction.CREATE,
    )
    assert server.db.shapes(task.id) == []
    response = raw(
        server, "PATCH", f"/api/tasks/{task.id}/annotations?action=bogus", headers=admin_basic(), body={"shapes": []}
    )
    assert json.loads(response.data) == ["Please specify a correct 'action' for the request"]


def test_other_users_see_nothing_of_the_admins_work(server: FakeCvat, client: Client, task, tmp_path: Path) -> None:
    server.add_user("bob", "bob-password-1")
    users = get_paginated_collection(client.api_client.users_api.list_endpoint, search="bo")
    assert [u.username for u in users] == ["bob"]
    bob = make_client(server, tmp_path, login=("bob", "bob-password-1"))
    with pytest.raises(ApiException) as err:
        bob.tasks.retrieve(task.id)
    assert err.value.status == 403
    assert error_body(err.value) == {"detail": "You do not have permission to perform this action."}
    assert bob.tasks.list() == []
    job = task.get_jobs()[0]
    with pytest.raises(ApiException) as err:
        bob.api_client.jobs_api.partial_update(
            job.id, patched_job_write_request=models.PatchedJobWriteRequest(stage="acceptance")
        )
    assert err.value.status == 403
    job.update({"assignee": server.db.user_by_name("bob").id})
    assert [j.id for j in list_jobs(bob)] == [job.id]
    bob.logout()
    with pytest.raises(ApiException) as err:
        bob.users.retrieve_current_user()
    assert err.value.status == 401


# ---- faults ----------------------------------------------------------------------------------------------
def test_502_on_every_third_get_is_served_and_counted(server: FakeCvat, client: Client, task) -> None:
    path = f"/api/tasks/{task.id}"
    server.set_faults(FaultPlan(kind="502", every=3, methods={"GET"}, paths=rf"^{path}/?$"))
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(client.tasks.retrieve(task.id).id)
        except ApiException as err:
            outcomes.append(err.status)
    assert server.faults.counts()["502"] == 1
    assert ("GET", path, 502) in server.requests
    if OLD_SDK:  # 2.17's urllib3 config retries connection errors only: the 502 reaches the caller
        assert outcomes == [task.id, task.id, 502, task.id]
    else:  # 2.80 retries GETs on 502/503/504 (urllib3 Retry), so every call succeeds
        assert outcomes == [task.id] * 4
    server.set_faults(None)
    assert client.tasks.retrieve(task.id).id == task.id and server.faults.counts()["502"] == 1


def test_connection_reset_and_lost_answers(server: FakeCvat, client: Client) -> None:
    server.set_faults(FaultPlan(kind="reset", methods={"POST"}, paths=r"^/api/projects/?$", limit=1))
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.projects.create(spec={"name": "first-try"})
    assert [p.name for p in server.db.projects.values()] == []  # the request never reached the API
    assert client.projects.create(spec={"name": "second-try"}).name == "second-try"
    server.set_faults(FaultPlan(kind="reset", methods={"GET"}, paths=r"^/api/users/self/?$", limit=1))
    assert client.users.retrieve_current_user().username == ADMIN_USERNAME  # urllib3 retries the GET
    assert [r.status for r in server.request_log if r.path == "/api/users/self"][-2:] == [0, 200]
    server.set_faults(FaultPlan(kind="502", when="after", methods={"POST"}, paths=r"^/api/projects/?$", limit=1))
    with pytest.raises(ApiException) as err:
        client.projects.create(spec={"name": "lost-answer"})
    assert err.value.status == 502
    assert "lost-answer" in [p.name for p in server.db.projects.values()]  # done, but the answer was lost
    assert server.faults.counts() == {"reset": 2, "502": 1}


def test_timeout_fault_holds_one_request_only(server: FakeCvat, client: Client) -> None:
    server.set_faults(FaultPlan(kind="timeout", delay=5.0, methods={"POST"}, paths=r"^/api/projects/?$", limit=1))
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.api_client.projects_api.create(models.ProjectWriteRequest(name="slow"), _request_timeout=0.3)
    assert client.users.retrieve_current_user().username == ADMIN_USERNAME  # other requests still answered
    assert server.faults.counts()["timeout"] == 1


def test_fault_plans_are_validated_and_limited(server: FakeCvat, client: Client) -> None:
    with pytest.raises(ValueError, match="kind"):
        FaultPlan(kind="teapot")
    with pytest.raises(ValueError, match="every"):
        FaultPlan(every=0)
    server.set_faults(FaultPlan(kind="503", methods={"GET"}, paths=r"^/api/projects/?$", skip=1, limit=1))
    raw(server, "GET", "/api/projects", headers=admin_basic())
    assert raw(server, "GET", "/api/projects", headers=admin_basic()).status == 503
    assert raw(server, "GET", "/api/projects", headers=admin_basic()).status == 200
    assert server.faults.plan_stats() == [{"matched": 3, "fired": 1}]


# ---- golden exchanges --------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2.17", "2.54"])
def test_golden_exchanges_replay_without_differences(version: str) -> None:
    replay = replay_version(version)
    assert replay.replayed > 80
    assert replay.problems == []
