"""Authentication (Token, Bearer PAT, Basic, session + CSRF), cookies and permissions."""

from __future__ import annotations

import base64
import binascii
import secrets
import string
from datetime import datetime, timedelta
from email.utils import format_datetime

from tests.fake_cvat.state import Job, Project, Session, State, Task, User
from tests.fake_cvat.web import UNSAFE_METHODS, ApiError, Ctx

NO_PERMISSION = {"detail": "You do not have permission to perform this action."}
_ALPHANUM = string.ascii_letters + string.digits


def random_key(length: int) -> str:
    """A random alphanumeric secret."""
    return "".join(secrets.choice(_ALPHANUM) for _ in range(length))


def unauthorized(ctx: Ctx, detail: str) -> ApiError:
    """CVAT's 401 (always ``WWW-Authenticate: Token``); 2.54 also clears a stale sessionfresh."""
    headers = [("WWW-Authenticate", "Token")]
    if ctx.profile.session_fresh_cookie and "sessionfresh" in ctx.cookies():
        headers.append(("Set-Cookie", clear_cookie("sessionfresh")))
    return ApiError(401, {"detail": detail}, headers=headers)


def forbidden() -> ApiError:
    """CVAT's 403 for an object or action the user may not touch."""
    return ApiError(403, NO_PERMISSION)


def authenticate(ctx: Ctx) -> None:
    """Fill ``ctx.user``/``ctx.auth`` from the request, in DRF's order; 401 on bad credentials.

    An ``Authorization`` header with a known scheme decides alone (a bad one is a 401). Without
    one, a valid ``sessionid`` cookie authenticates. Bearer tokens exist only where the profile
    has access tokens; elsewhere the scheme is unknown and ignored, as DRF does.
    """
    db = ctx.db
    header = ctx.headers.get("Authorization")
    if header:
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "token":
            user = next((u for u in db.users.values() if u.token_key and u.token_key == credentials), None)
            if user is None or not user.is_active:
                raise unauthorized(ctx, "Invalid token.")
            ctx.user, ctx.auth = user, "token"
            return
        if scheme == "bearer" and ctx.profile.access_tokens:
            token = next((t for t in db.access_tokens.values() if t.value == credentials), None)
            now = db.now()
            if token is None or (token.expiry_date is not None and token.expiry_date <= now):
                raise unauthorized(ctx, "Invalid token.")
            user = db.users.get(token.owner_id)
            if user is None or not user.is_active:
                raise unauthorized(ctx, "Invalid token.")
            token.last_used_date = now
            ctx.user, ctx.auth, ctx.access_token = user, "pat", token
            return
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise unauthorized(ctx, "Invalid basic header. Credentials not correctly base64 encoded.") from None
            username, sep, password = decoded.partition(":")
            user = db.user_by_name(username)
            if not sep or user is None or user.password != password or not user.is_active:
                raise unauthorized(ctx, "Invalid username/password.")
            ctx.user, ctx.auth = user, "basic"
            return
    session = db.sessions.get(ctx.cookies().get("sessionid", ""))
    if session is not None and session.user_id in db.users:
        ctx.user, ctx.auth, ctx.session = db.users[session.user_id], "session", session


def enforce_csrf(ctx: Ctx) -> None:
    """Django's CSRF check for session-authenticated unsafe requests (403 with DRF's text)."""
    if ctx.auth != "session" or ctx.method not in UNSAFE_METHODS:
        return
    sent = ctx.headers.get("X-CSRFToken")
    cookie = ctx.cookies().get("csrftoken")
    if not cookie:
        raise ApiError(403, {"detail": "CSRF Failed: CSRF cookie not set."})
    if not sent:
        raise ApiError(403, {"detail": "CSRF Failed: CSRF token missing."})
    if sent != cookie:
        raise ApiError(403, {"detail": "CSRF Failed: CSRF token incorrect."})


def enforce_read_only_token(ctx: Ctx) -> None:
    """A read-only personal access token may only read."""
    token = ctx.access_token
    if ctx.auth == "pat" and token is not None and token.read_only and ctx.method in UNSAFE_METHODS:
        raise forbidden()


# ---- cookies -----------------------------------------------------------------------------
def _cookie(name: str, value: str, max_age: int, *, http_only: bool, now: datetime) -> str:
    expires = format_datetime(now + timedelta(seconds=max_age), usegmt=True)
    flags = "; HttpOnly" if http_only else ""
    return f"{name}={value}; expires={expires}{flags}; Max-Age={max_age}; Path=/; SameSite=Lax"


def clear_cookie(name: str) -> str:
    """A Set-Cookie value that deletes ``name``."""
    return f'{name}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax'


def session_cookies(ctx: Ctx, user: User) -> list[tuple[str, str]]:
    """Open a session for ``user``; the Set-Cookie headers CVAT sends on login/register."""
    db = ctx.db
    session = Session(key=random_key(32), csrf=random_key(32), user_id=user.id)
    db.sessions[session.key] = session
    now = db.now()
    headers = [("Set-Cookie", _cookie("csrftoken", session.csrf, 31449600, http_only=False, now=now))]
    if ctx.profile.session_fresh_cookie:
        headers.append(("Set-Cookie", _cookie("sessionfresh", random_key(32), 86400, http_only=True, now=now)))
    headers.append(("Set-Cookie", _cookie("sessionid", session.key, 1209600, http_only=True, now=now)))
    return headers


# ---- permissions ---------------------------------------------------------------------------
def is_project_staff(user: User, project: Project) -> bool:
    """Admin, owner or assignee of the project."""
    return user.is_admin or user.id in (project.owner_id, project.assignee_id)


def is_task_staff(db: State, user: User, task: Task) -> bool:
    """Admin, owner or assignee of the task or of its project."""
    if user.is_admin or user.id in (task.owner_id, task.assignee_id):
        return True
    project = db.projects.get(task.project_id) if task.project_id is not None else None
    return project is not None and is_project_staff(user, project)


def can_view_task(db: State, user: User, task: Task) -> bool:
    """Task staff, or the assignee of one of its jobs."""
    if is_task_staff(db, user, task):
        return True
    return any(job.assignee_id == user.id for job in db.task_jobs(task.id))


def can_view_job(db: State, user: User, job: Job) -> bool:
    """Staff of the job's task, or the job's assignee."""
    return job.assignee_id == user.id or is_task_staff(db, user, db.tasks[job.task_id])


def can_view_project(db: State, user: User, project: Project) -> bool:
    """Project staff, or someone who can see one of its tasks."""
    if is_project_staff(user, project):
        return True
    return any(task.project_id == project.id and can_view_task(db, user, task) for task in db.tasks.values())
