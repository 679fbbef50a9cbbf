"""The fake server's in-memory database: records, id sequences and a monotonic clock.

Ids are server-global auto-increments, one sequence per table, never reused (as in CVAT).
All access happens under ``State.lock`` (the HTTP layer takes it around every request).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def iso(moment: datetime | None) -> str | None:
    """CVAT's timestamp format: ``2026-11-22T02:29:46.643641Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class User:
    id: int
    username: str
    password: str
    email: str
    first_name: str
    last_name: str
    is_admin: bool
    date_joined: datetime
    is_active: bool = True
    last_login: datetime | None = None
    token_key: str | None = None
    """The legacy DRF token returned by login (``Authorization: Token <key>``)."""


@dataclass
class Session:
    key: str
    csrf: str
    user_id: int


@dataclass
class AccessToken:
    id: int
    name: str
    value: str
    owner_id: int
    read_only: bool
    expiry_date: datetime | None
    created_date: datetime
    updated_date: datetime
    last_used_date: datetime | None = None


@dataclass
class Attribute:
    id: int
    name: str
    mutable: bool
    input_type: str
    default_value: str
    values: list[str]


@dataclass
class Label:
    id: int
    name: str
    color: str
    type: str
    attributes: list[Attribute]
    project_id: int | None
    task_id: int | None
    parent_id: int | None = None
    svg: str | None = None
    sublabel_ids: list[int] = field(default_factory=list)


@dataclass
class Project:
    id: int
    name: str
    owner_id: int
    created_date: datetime
    updated_date: datetime
    assignee_id: int | None = None
    assignee_updated_date: datetime | None = None
    bug_tracker: str = ""


@dataclass
class Frame:
    name: str
    width: int
    height: int
    original: bytes
    mime: str
    extension: str
    compressed: bytes | None = None
    """The JPEG, made on first request."""


@dataclass
class TaskData:
    id: int
    frames: list[Frame]
    chunk_size: int
    image_quality: int
    chunks_updated_date: datetime
    frame_filter: str = ""
    deleted_frames: set[int] = field(default_factory=set)


@dataclass
class Task:
    id: int
    name: str
    owner_id: int
    created_date: datetime
    updated_date: datetime
    project_id: int | None = None
    assignee_id: int | None = None
    assignee_updated_date: datetime | None = None
    bug_tracker: str = ""
    subset: str = ""
    segment_size: int = 0
    overlap: int | None = None
    data: TaskData | None = None
    upload_open: bool = False
    pending_files: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Job:
    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    created_date: datetime
    updated_date: datetime
    stage: str = "annotation"
    state: str = "new"
    type: str = "annotation"
    assignee_id: int | None = None
    assignee_updated_date: datetime | None = None

    @property
    def frame_count(self) -> int:
        return self.stop_frame - self.start_frame + 1

    def contains(self, frame: int) -> bool:
        return self.start_frame <= frame <= self.stop_frame

    @property
    def status(self) -> str:
        """CVAT's legacy status, derived from stage and state."""
        if self.stage == "annotation":
            return "annotation"
        if self.stage == "acceptance" and self.state == "completed":
            return "completed"
        return "validation"


@dataclass
class TaskAnnotations:
    """Stored annotation objects of one task, keyed by id (dicts in CVAT's JSON shape)."""

    tags: dict[int, dict] = field(default_factory=dict)
    shapes: dict[int, dict] = field(default_factory=dict)
    tracks: dict[int, dict] = field(default_factory=dict)


@dataclass
class BackgroundRequest:
    id: str
    type: str
    target: str
    owner_id: int
    created_date: datetime
    task_id: int | None = None
    project_id: int | None = None
    job_id: int | None = None
    format: str | None = None
    polls: list[tuple[str, float]] = field(default_factory=list)
    """(message, progress) of the ``started`` polls before the outcome shows."""
    outcome_status: str = "finished"
    outcome_message: str = ""
    outcome_progress: float = 0.0
    poll_index: int = 0
    started_date: datetime | None = None
    finished_date: datetime | None = None
    expiry_date: datetime | None = None
    result_url: str | None = None
    result_id: int | None = None


@dataclass
class TusUpload:
    id: str
    owner_id: int
    task_id: int
    target: str
    """``data`` or ``annotations``."""
    filename: str
    length: int
    content: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.content) == self.length


@dataclass
class AnnotationFile:
    """A finished annotation upload waiting for its ``Upload-Finish``."""

    filename: str
    content: bytes


class State:
    """All records of one fake server."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[int, User] = {}
        self.sessions: dict[str, Session] = {}
        self.access_tokens: dict[int, AccessToken] = {}
        self.projects: dict[int, Project] = {}
        self.labels: dict[int, Label] = {}
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self.annotations: dict[int, TaskAnnotations] = defaultdict(TaskAnnotations)
        self.requests: dict[str, BackgroundRequest] = {}
        self.tus_uploads: dict[str, TusUpload] = {}
        self.annotation_files: dict[tuple[int, str], AnnotationFile] = {}
        self._sequences: dict[str, int] = defaultdict(int)
        self._last_time = datetime.fromtimestamp(0, UTC)

    def next_id(self, table: str) -> int:
        """The next id of ``table`` (one sequence per table, never reused)."""
        with self.lock:
            self._sequences[table] += 1
            return self._sequences[table]

    def advance_sequence(self, table: str, last_id: int) -> None:
        """Continue ``table``'s ids after ``last_id``, as on a server that already holds data."""
        with self.lock:
            self._sequences[table] = max(self._sequences[table], last_id)

    def now(self) -> datetime:
        """The current time, strictly later than every earlier call."""
        with self.lock:
            moment = datetime.now(UTC)
            if moment <= self._last_time:
                moment = self._last_time + timedelta(microseconds=1)
            self._last_time = moment
            return moment

    # ---- lookups -------------------------------------------------------------------
    def user_by_name(self, username: str) -> User | None:
        """The user called ``username``, if any."""
        return next((u for u in self.users.values() if u.username == username), None)

    def task_labels(self, task: Task) -> list[Label]:
        """Top-level labels a task uses: its project's, or its own."""
        if task.project_id is not None:
            return self.owner_labels(project_id=task.project_id)
        return self.owner_labels(task_id=task.id)

    def owner_labels(self, *, project_id: int | None = None, task_id: int | None = None) -> list[Label]:
        """Top-level labels of a project or of a standalone task, ascending id."""
        return sorted(
            (
                label
                for label in self.labels.values()
                if label.parent_id is None
                and (
                    (project_id is not None and label.project_id == project_id)
                    or (task_id is not None and label.task_id == task_id)
                )
            ),
            key=lambda label: label.id,
        )

    def all_task_labels(self, task: Task) -> dict[int, Label]:
        """Every label a task's annotations may use (sublabels included), by id."""
        result: dict[int, Label] = {}
        for label in self.task_labels(task):
            result[label.id] = label
            for sub_id in label.sublabel_ids:
                result[sub_id] = self.labels[sub_id]
        return result

    def task_jobs(self, task_id: int) -> list[Job]:
        """Jobs of a task, in frame order."""
        return sorted(
            (job for job in self.jobs.values() if job.task_id == task_id),
            key=lambda job: job.start_frame,
        )

    def job_project_id(self, job: Job) -> int | None:
        return self.tasks[job.task_id].project_id

    # ---- convenience views for test assertions ------------------------------------
    def shapes(self, task_id: int) -> list[dict]:
        """Stored shapes of a task, ascending id."""
        return [self.annotations[task_id].shapes[k] for k in sorted(self.annotations[task_id].shapes)]

    def tags(self, task_id: int) -> list[dict]:
        """Stored tags of a task, ascending id."""
        return [self.annotations[task_id].tags[k] for k in sorted(self.annotations[task_id].tags)]

    def tracks(self, task_id: int) -> list[dict]:
        """Stored tracks of a task, ascending id."""
        return [self.annotations[task_id].tracks[k] for k in sorted(self.annotations[task_id].tracks)]

    def remove_task(self, task: Task) -> None:
        """Delete a task with its jobs, annotations, own labels and pending uploads."""
        for job in self.task_jobs(task.id):
            del self.jobs[job.id]
        self.annotations.pop(task.id, None)
        for label in [lb for lb in self.labels.values() if lb.task_id == task.id and lb.project_id is None]:
            del self.labels[label.id]
        for upload_id in [k for k, u in self.tus_uploads.items() if u.task_id == task.id]:
            del self.tus_uploads[upload_id]
        for key in [k for k in self.annotation_files if k[0] == task.id]:
            del self.annotation_files[key]
        del self.tasks[task.id]

    # ---- time stamps ---------------------------------------------------------------
    def touch(self, task: Task, jobs: list[Job] = ()) -> None:
        """Set ``updated_date`` of the given jobs, the task and its project to now."""
        moment = self.now()
        for job in jobs:
            job.updated_date = moment
        task.updated_date = moment
        if task.project_id is not None and task.project_id in self.projects:
            self.projects[task.project_id].updated_date = moment
