"""Turning uploaded files and data parameters into task frames and jobs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tests.fake_cvat.media import MediaError, default_chunk_size, expand_archives, make_frame, natural_key
from tests.fake_cvat.multipart import as_json_value, single
from tests.fake_cvat.state import Job, State, Task, TaskData
from tests.fake_cvat.web import bad_request

SORTING_METHODS = ("lexicographical", "natural", "predefined", "random")


@dataclass(frozen=True)
class DataParams:
    """The validated fields of ``Upload-Finish`` (CVAT's DataSerializer)."""

    image_quality: int
    sorting_method: str = "lexicographical"
    chunk_size: int | None = None
    start_frame: int = 0
    stop_frame: int | None = None
    frame_step: int = 1
    upload_file_order: tuple[str, ...] = ()
    server_files: tuple[str, ...] = ()
    remote_files: tuple[str, ...] = ()
    job_file_mapping: object = None


def _int_field(fields: dict, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    raw = single(fields, name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise bad_request({name: ["A valid integer is required."]}) from None
    if value < minimum:
        raise bad_request({name: [f"Ensure this value is greater than or equal to {minimum}."]})
    if maximum is not None and value > maximum:
        raise bad_request({name: [f"Ensure this value is less than or equal to {maximum}."]})
    return value


def parse_params(fields: dict) -> DataParams:
    """Validate data parameters; 400s with DRF-shaped bodies."""
    quality = _int_field(fields, "image_quality", minimum=0, maximum=100)
    if quality is None:
        raise bad_request({"image_quality": ["This field is required."]})
    sorting = single(fields, "sorting_method") or "lexicographical"
    if sorting not in SORTING_METHODS:
        raise bad_request({"sorting_method": [f'"{sorting}" is not a valid choice.']})
    step = 1
    frame_filter = single(fields, "frame_filter") or ""
    if frame_filter:
        found = re.fullmatch(r"step=(\d+)", frame_filter)
        if not found or int(found.group(1)) < 1:
            raise bad_request({"frame_filter": ["Invalid frame filter expression"]})
        step = int(found.group(1))
    return DataParams(
        image_quality=quality,
        sorting_method=sorting,
        chunk_size=_int_field(fields, "chunk_size", minimum=1),
        start_frame=_int_field(fields, "start_frame", minimum=0) or 0,
        stop_frame=_int_field(fields, "stop_frame", minimum=0),
        frame_step=step,
        upload_file_order=tuple(str(v) for v in fields.get("upload_file_order") or ()),
        server_files=tuple(str(v) for v in fields.get("server_files") or ()),
        remote_files=tuple(str(v) for v in fields.get("remote_files") or ()),
        job_file_mapping=as_json_value(single(fields, "job_file_mapping")),
    )


def _share_files(share_dir: str | None, names: tuple[str, ...]) -> list[tuple[str, bytes]]:
    if share_dir is None:
        raise MediaError("server_files need FakeCvat(share_dir=...)")
    root = os.path.realpath(share_dir)
    files = []
    for name in names:
        path = os.path.realpath(os.path.join(root, name.lstrip("/")))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            raise MediaError(f"{name}: no such file in the share")
        with open(path, "rb") as handle:
            files.append((name, handle.read()))
    return files


def _ordered(files: list[tuple[str, bytes]], params: DataParams) -> list[tuple[str, bytes]]:
    if params.sorting_method == "lexicographical":
        return sorted(files, key=lambda f: f[0])
    if params.sorting_method == "natural":
        return sorted(files, key=lambda f: natural_key(f[0]))
    if params.sorting_method == "predefined" and params.upload_file_order:
        rank = {name: i for i, name in enumerate(params.upload_file_order)}
        missing = [name for name, _ in files if name not in rank]
        if missing:
            raise MediaError(f"{missing[0]}: not listed in upload_file_order")
        return sorted(files, key=lambda f: rank[f[0]])
    return list(files)  # predefined without an order, and random: upload order


def build_task_data(db: State, task: Task, params: DataParams, share_dir: str | None) -> None:
    """Decode the files, create frames and jobs; MediaError (the message names the file) on bad media."""
    if params.remote_files:
        raise MediaError("remote_files are not supported by the fake CVAT (no network)")
    if params.job_file_mapping:
        raise MediaError("job_file_mapping is not supported by the fake CVAT")
    files = list(task.pending_files)
    if params.server_files:
        files += _share_files(share_dir, params.server_files)
    files = expand_archives(files)
    if not files:
        raise MediaError("No media data found")
    frames = [make_frame(name, content) for name, content in _ordered(files, params)]
    stop = len(frames) - 1 if params.stop_frame is None else min(params.stop_frame, len(frames) - 1)
    frames = frames[params.start_frame : stop + 1 : params.frame_step]
    if not frames:
        raise MediaError("No frames are left after start_frame/stop_frame/frame_filter")
    now = db.now()
    task.data = TaskData(
        id=db.next_id("data"),
        frames=frames,
        chunk_size=params.chunk_size or default_chunk_size(frames),
        image_quality=params.image_quality,
        chunks_updated_date=now,
        frame_filter=f"step={params.frame_step}" if params.frame_step > 1 else "",
    )
    size = len(frames)
    if not task.segment_size:
        task.segment_size = size
    task.overlap = 0
    for start in range(0, size, task.segment_size):
        job = Job(
            id=db.next_id("job"),
            task_id=task.id,
            start_frame=start,
            stop_frame=min(start + task.segment_size, size) - 1,
            created_date=db.now(),
            updated_date=db.now(),
        )
        db.jobs[job.id] = job
    task.pending_files = []
    task.upload_open = False
    db.touch(task)
