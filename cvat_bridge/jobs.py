"""Jobs: listing with filters (incremental by ``updated_date``), assignment, stage/state.

A job ``PATCH`` sets values, so repeating it is harmless: `set_job` marks it repeatable, so
the transport retries it after 5xx answers, timeouts and dropped connections, and sends
nothing when the job already has the values (a rerun of a push then leaves the jobs'
``updated_date`` alone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cvat_bridge.api import CvatError, call, iter_pages

if TYPE_CHECKING:
    from cvat_bridge.client import CvatSession

__all__ = ["JobInfo", "assign_jobs", "list_jobs", "plan_assignments", "set_job", "user_ids"]

STAGES = ("annotation", "validation", "acceptance")
STATES = ("new", "in progress", "completed", "rejected")


@dataclass(frozen=True)
class JobInfo:
    """A job as listed by the server (frames task-relative, inclusive)."""

    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    stage: str
    state: str
    assignee: str | None
    updated_date: str
    assignee_id: int | None = None

    @classmethod
    def from_model(cls, job: Any) -> JobInfo:
        """From an SDK ``JobRead``."""
        assignee = getattr(job, "assignee", None)
        updated = getattr(job, "updated_date", None)
        return cls(
            id=int(job.id),
            task_id=int(job.task_id),
            start_frame=int(job.start_frame),
            stop_frame=int(job.stop_frame),
            stage=str(job.stage),
            state=str(job.state),
            assignee=assignee.username if assignee else None,
            updated_date=updated.isoformat() if hasattr(updated, "isoformat") else str(updated or ""),
            assignee_id=int(assignee.id) if assignee else None,
        )


def list_jobs(
    session: CvatSession,
    *,
    task_id: int | None = None,
    project_id: int | None = None,
    stage: str | None = None,
    state: str | None = None,
    updated_after: str | None = None,
) -> list[JobInfo]:
    """Annotation jobs matching the filters, oldest id first.

    ``updated_after`` (ISO date) becomes a JSON-logic ``filter`` on ``updated_date``.
    """
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    filters: dict[str, Any] = {"type": "annotation"}
    for key, value in (("task_id", task_id), ("project_id", project_id), ("stage", stage), ("state", state)):
        if value is not None:
            filters[key] = value
    if updated_after:
        filters["filter"] = json.dumps({">": [{"var": "updated_date"}, updated_after]})
    listing = session.sdk.api_client.jobs_api.list
    jobs = call("list jobs", session.host, lambda: list(iter_pages(listing, **filters)))
    return sorted((JobInfo.from_model(j) for j in jobs), key=lambda j: j.id)


def user_ids(session: CvatSession, usernames: Sequence[str]) -> dict[str, int]:
    """User ids by exact username; unknown users are an error naming them."""
    server = session.host
    listing = session.sdk.api_client.users_api.list
    found: dict[str, int] = {}
    for name in dict.fromkeys(usernames):
        users = call("list users", server, lambda n=name: list(iter_pages(listing, search=n)))
        exact = [u for u in users if u.username == name]
        if not exact:
            raise CvatError(f"{server}: no user named {name!r}")
        found[name] = int(exact[0].id)
    return found


def plan_assignments(
    job_ids: Sequence[int], assignees: Sequence[str] | Mapping[int, str]
) -> dict[int, str]:
    """Round-robin over a list of usernames (in job id order), or an explicit job → user map."""
    if isinstance(assignees, Mapping):
        unknown = sorted(set(assignees) - set(job_ids))
        if unknown:
            raise ValueError(f"assignment map names jobs that are not in the task: {unknown}")
        return dict(assignees)
    if not assignees:
        return {}
    ordered = sorted(job_ids)
    return {job_id: assignees[i % len(assignees)] for i, job_id in enumerate(ordered)}


def set_job(session: CvatSession, job_id: int, *, current: JobInfo | None = None, **fields: Any) -> JobInfo:
    """PATCH a job (``assignee`` as a user id or None, ``stage``, ``state``) unless it
    already has these values (``current``: the job as just listed, else it is read); retried
    by the transport, since setting values is idempotent."""
    from cvat_sdk.api_client import models

    unknown = sorted(set(fields) - {"assignee", "stage", "state"})
    if unknown:
        raise ValueError(f"set_job sets assignee, stage and state only, got {unknown}")
    if "stage" in fields and fields["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {fields['stage']!r}")
    if "state" in fields and fields["state"] not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {fields['state']!r}")
    server = session.host
    api = session.sdk.api_client.jobs_api
    if current is None:
        current = JobInfo.from_model(call(f"read job {job_id}", server, lambda: api.retrieve(job_id)[0]))
    now = {"assignee": current.assignee_id, "stage": current.stage, "state": current.state}
    changes = {key: value for key, value in fields.items() if now[key] != value}
    if not changes:
        return current
    updated, _ = call(
        f"update job {job_id}",
        server,
        api.partial_update,
        job_id,
        patched_job_write_request=models.PatchedJobWriteRequest(**changes),
        repeatable=True,
    )
    return JobInfo.from_model(updated)


def assign_jobs(
    session: CvatSession,
    plan: Mapping[int, str],
    *,
    ids: Mapping[str, int] | None = None,
    jobs: Mapping[int, JobInfo] | None = None,
) -> dict[int, str]:
    """Apply an assignment plan (job id → username); returns the plan. Jobs already
    assigned to their user are left untouched. ``ids``: user ids by name, ``jobs``: the jobs
    as just listed, when already known (saves requests)."""
    ids = ids if ids is not None else user_ids(session, list(plan.values()))
    jobs = jobs or {}
    for job_id, username in sorted(plan.items()):
        set_job(session, job_id, current=jobs.get(job_id), assignee=ids[username])
    return dict(plan)
