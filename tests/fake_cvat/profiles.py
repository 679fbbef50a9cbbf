"""What differs between the CVAT server versions the fake can act as.

Every difference listed here was observed in the golden exchanges under
``/work/shared/cvat_golden/{2.17,2.54}`` (see their README files). Route code asks the
profile instead of comparing version strings, so a new version is one more entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VersionProfile:
    """Behaviour switches for one CVAT server version."""

    version: str
    """What ``GET /api/server/about`` reports."""
    about_branding: bool
    """``logo_url`` and ``subtitle`` in the about object (cvat-sdk 2.80 requires them)."""
    session_fresh_cookie: bool
    """Login/register also set the ``sessionfresh`` cookie; logout and stale sessions clear it."""
    access_tokens: bool
    """Personal access tokens (``Authorization: Bearer``, ``/api/auth/access_tokens``)."""
    user_analytics_field: bool
    """User objects carry ``has_analytics_access``."""
    organization_id_field: bool
    """Projects and tasks carry ``organization_id``."""
    task_extra_fields: bool
    """Tasks carry ``validation_mode``, ``consensus_enabled`` and ``data_cloud_storage_id``."""
    job_extra_fields: bool
    """Jobs carry ``data_original_chunk_type``, ``parent_job_id``, ``consensus_replicas``."""
    meta_extra_fields: bool
    """``data/meta`` carries ``chapters``, ``chunks_updated_date``, ``storage``, ``cloud_storage_id``."""
    request_lightweight_field: bool
    """Request objects carry ``operation.lightweight``."""
    verbose_not_found: bool
    """404 bodies name the model (``No Task matches the given query.``) instead of ``Not found.``."""
    query_style_rq_ids: bool
    """rq_ids look like ``action=create&target=task&target_id=1`` instead of ``create:task-1``."""
    request_not_found_names_id: bool
    """The text/html 404 of an unknown rq_id ends with ``: <id>``."""
    create_task_polls: tuple[tuple[str, float], ...]
    """(message, progress) of each ``started`` poll before task creation reads ``finished``.
    How many of these a real client sees depends on timing (2.17's flow 03 saw only the
    second); the fake shows all of them, one per poll."""
    finished_create_progress: float
    """``progress`` of a finished task-creation request."""
    tus_ids_prefixed_with_user: bool
    """TUS upload ids are ``<user_id>_<uuid>``."""
    tus_patch_sends_filename: bool
    """TUS PATCH replies repeat ``Upload-Filename``."""
    tus_annotation_filename_is_id: bool
    """For annotation uploads, ``Upload-Filename`` is the TUS id, not the file name."""
    chunk_content_disposition: bool
    """Chunk downloads carry ``Content-Disposition: inline; filename="<n>.zip"``."""
    shape_score: bool
    """Shapes keep a ``score`` field. Neither recorded server does: a sent score is dropped."""
    filter_error_with_reason: bool
    """A non-JSON ``filter`` error names the parser's message."""
    job_types: tuple[str, ...] = ("annotation", "ground_truth")
    """Accepted values of the job ``type`` filter."""

    def rq_id(self, action: str, task_id: int, *, subresource: str | None = None) -> str:
        """The id of a background request on a task, in this version's format."""
        if self.query_style_rq_ids:
            rq = f"action={action}&target=task&target_id={task_id}"
            if subresource:
                rq += f"&subresource={subresource}"
            return rq
        if subresource:
            return f"{action}:task-{task_id}-{subresource}"
        return f"{action}:task-{task_id}"

    def not_found(self, model: str) -> dict:
        """The JSON body of a 404 for a missing object of ``model``."""
        if self.verbose_not_found:
            return {"detail": f"No {model} matches the given query."}
        return {"detail": "Not found."}

    def frame_outside_job(self, frame: int) -> str:
        """The JSON-string body of a 400 for a job frame outside the job's segment."""
        if self.verbose_not_found:
            return f"Incorrect requested frame number: {frame}"
        return "The frame number doesn't belong to the job"

    def chunk_out_of_range(self, number: int, last: int) -> str:
        """The JSON-string body of a 400 for a chunk number outside ``[0, last]``."""
        if self.verbose_not_found:
            return f"Invalid chunk number '{number}'. The chunk number should be in the [0, {last}] range"
        return f"The chunk number should be in  the [0, {last}] range"

    def bad_filter(self, reason: str) -> list[str]:
        """The list body of a 400 for a ``filter`` that is not JSON."""
        if self.filter_error_with_reason:
            return [f"filter: can't parse filter expression: {reason}"]
        return ["filter: Json syntax should be used"]

    def request_not_found(self, rq_id: str) -> str:
        """The text/html body of a 404 for an unknown rq_id."""
        if self.request_not_found_names_id:
            return f"There is no request with specified id: {rq_id}"
        return "There is no request with specified id"


PROFILES: dict[str, VersionProfile] = {
    "2.17": VersionProfile(
        version="2.17.0",
        about_branding=False,
        session_fresh_cookie=False,
        access_tokens=False,
        user_analytics_field=False,
        organization_id_field=False,
        task_extra_fields=False,
        job_extra_fields=False,
        meta_extra_fields=False,
        request_lightweight_field=False,
        verbose_not_found=False,
        query_style_rq_ids=False,
        request_not_found_names_id=True,
        create_task_polls=(
            ("Media files are being extracted...", 0.0),
            ("Task is being saved in database", 1.0),
        ),
        finished_create_progress=1.0,
        tus_ids_prefixed_with_user=False,
        tus_patch_sends_filename=True,
        tus_annotation_filename_is_id=False,
        chunk_content_disposition=True,
        shape_score=False,
        filter_error_with_reason=False,
    ),
    "2.54": VersionProfile(
        version="2.54.1",
        about_branding=True,
        session_fresh_cookie=True,
        access_tokens=True,
        user_analytics_field=True,
        organization_id_field=True,
        task_extra_fields=True,
        job_extra_fields=True,
        meta_extra_fields=True,
        request_lightweight_field=True,
        verbose_not_found=True,
        query_style_rq_ids=True,
        request_not_found_names_id=False,
        create_task_polls=(
            ("Media files are being extracted...", 0.0),
            ("Task is being saved in database", 0.0),
        ),
        finished_create_progress=0.0,
        tus_ids_prefixed_with_user=True,
        tus_patch_sends_filename=False,
        tus_annotation_filename_is_id=True,
        chunk_content_disposition=False,
        shape_score=False,
        filter_error_with_reason=True,
        job_types=("annotation", "ground_truth", "consensus_replica"),
    ),
}

ABOUT_DESCRIPTION = (
    "CVAT is completely re-designed and re-implemented version of Video Annotation Tool from "
    "Irvine, California tool. It is free, online, interactive video and image annotation tool "
    "for computer vision. It is being used by our team to annotate million of objects with "
    "different properties. Many UI and UX decisions are based on feedbacks from professional "
    "data annotation team."
)
