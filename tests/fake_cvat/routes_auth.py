"""Server info, login/logout/register, users, personal access tokens, lambda without Nuclio."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.fake_cvat.auth import clear_cookie, forbidden, random_key, session_cookies
from tests.fake_cvat.listing import Field, ListSpec, list_response
from tests.fake_cvat.profiles import ABOUT_DESCRIPTION, VersionProfile
from tests.fake_cvat.serializers import access_token_json, user_json
from tests.fake_cvat.state import AccessToken, User
from tests.fake_cvat.web import ApiError, Ctx, Response, Router, bad_request, json_response

REQUIRED = ["This field is required."]

USERS_SPEC = ListSpec(
    fields={
        "id": Field("int", lambda u: u.id),
        "username": Field("str", lambda u: u.username),
        "first_name": Field("str", lambda u: u.first_name),
        "last_name": Field("str", lambda u: u.last_name),
        "is_active": Field("bool", lambda u: u.is_active),
    },
    simple_filters=("id", "username", "first_name", "last_name", "is_active"),
    search=("username", "first_name", "last_name"),
)

TOKENS_SPEC = ListSpec(
    fields={
        "id": Field("int", lambda t: t.id),
        "name": Field("str", lambda t: t.name),
        "read_only": Field("bool", lambda t: t.read_only),
        "created_date": Field("datetime", lambda t: t.created_date),
        "updated_date": Field("datetime", lambda t: t.updated_date),
        "expiry_date": Field("datetime", lambda t: t.expiry_date),
        "last_used_date": Field("datetime", lambda t: t.last_used_date),
    },
    simple_filters=("name", "read_only"),
    search=("name",),
)


def about(ctx: Ctx) -> Response:
    data = {
        "name": "Computer Vision Annotation Tool",
        "description": ABOUT_DESCRIPTION,
        "version": ctx.profile.version,
    }
    if ctx.profile.about_branding:
        data["logo_url"] = ctx.abs_url("/static/logo.svg")
        data["subtitle"] = "Open Data Annotation Platform"
    return json_response(data)


def _ensure_token(ctx: Ctx, user: User) -> str:
    if user.token_key is None:
        user.token_key = random_key(40).lower()
    return user.token_key


def login(ctx: Ctx) -> Response:
    data = ctx.json_object()
    errors = {name: REQUIRED for name in ("password",) if not data.get(name)}
    if not data.get("username") and not data.get("email"):
        errors["username"] = REQUIRED
    if errors:
        raise bad_request(errors)
    db = ctx.db
    user = db.user_by_name(str(data.get("username") or ""))
    if user is None and data.get("email"):
        user = next((u for u in db.users.values() if u.email == data["email"]), None)
    if user is None or user.password != data["password"] or not user.is_active:
        raise bad_request({"non_field_errors": ["Unable to log in with provided credentials."]})
    user.last_login = db.now()
    return json_response({"key": _ensure_token(ctx, user)}, headers=session_cookies(ctx, user))


def logout(ctx: Ctx) -> Response:
    if ctx.session is not None:
        ctx.db.sessions.pop(ctx.session.key, None)
    if ctx.user is not None and ctx.auth in ("session", "token", "basic"):
        ctx.user.token_key = None  # dj-rest-auth deletes the user's token on logout
    headers = []
    if ctx.profile.session_fresh_cookie:
        headers.append(("Set-Cookie", clear_cookie("sessionfresh")))
    headers.append(("Set-Cookie", clear_cookie("sessionid")))
    return json_response({"detail": "Successfully logged out."}, headers=headers)


def register(ctx: Ctx) -> Response:
    data = ctx.json_object()
    errors = {name: REQUIRED for name in ("username", "email", "password1", "password2") if not data.get(name)}
    if errors:
        raise bad_request(errors)
    db = ctx.db
    if db.user_by_name(data["username"]) is not None:
        raise bad_request({"username": ["A user with that username already exists."]})
    if data["password1"] != data["password2"]:
        raise bad_request({"non_field_errors": ["The two password fields didn't match."]})
    user = User(
        id=db.next_id("user"),
        username=data["username"],
        password=data["password1"],
        email=data["email"],
        first_name=data.get("first_name", ""),
        last_name=data.get("last_name", ""),
        is_admin=False,
        date_joined=db.now(),
    )
    db.users[user.id] = user
    headers = [("Set-Cookie", "messages=; HttpOnly; Path=/; SameSite=Lax"), *session_cookies(ctx, user)]
    body = {
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email_verification_required": False,
        "key": _ensure_token(ctx, user),
    }
    return json_response(body, 201, headers)


def users_self(ctx: Ctx) -> Response:
    return json_response(user_json(ctx, ctx.user))


def users_list(ctx: Ctx) -> Response:
    return list_response(ctx, ctx.db.users.values(), USERS_SPEC, lambda u: user_json(ctx, u))


def user_retrieve(ctx: Ctx, user_id: str) -> Response:
    user = ctx.db.users.get(int(user_id))
    if user is None:
        raise ApiError(404, ctx.profile.not_found("User"))
    return json_response(user_json(ctx, user))


# ---- personal access tokens (2.48+) ---------------------------------------------------------
def _token_manager_only(ctx: Ctx) -> None:
    if ctx.auth == "pat":
        raise forbidden()


def _own_token(ctx: Ctx, token_id: str) -> AccessToken:
    token = ctx.db.access_tokens.get(int(token_id))
    if token is None or token.owner_id != ctx.user.id:
        raise ApiError(404, ctx.profile.not_found("AccessToken"))
    return token


def _parse_expiry(raw) -> datetime | None:
    if raw in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(raw))
    except ValueError as err:
        raise bad_request({"expiry_date": [f"Datetime has wrong format: {err}"]}) from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def token_create(ctx: Ctx) -> Response:
    _token_manager_only(ctx)
    data = ctx.json_object()
    if not data.get("name"):
        raise bad_request({"name": REQUIRED})
    db = ctx.db
    now = db.now()
    token = AccessToken(
        id=db.next_id("access_token"),
        name=str(data["name"]),
        value=random_key(41),
        owner_id=ctx.user.id,
        read_only=bool(data.get("read_only", False)),
        expiry_date=_parse_expiry(data.get("expiry_date")),
        created_date=now,
        updated_date=now,
    )
    db.access_tokens[token.id] = token
    return json_response(access_token_json(ctx, token, with_value=True), 201)


def token_list(ctx: Ctx) -> Response:
    mine = [t for t in ctx.db.access_tokens.values() if t.owner_id == ctx.user.id]
    return list_response(ctx, mine, TOKENS_SPEC, lambda t: access_token_json(ctx, t))


def token_self(ctx: Ctx) -> Response:
    if ctx.access_token is None:
        raise ApiError(404, ctx.profile.not_found("AccessToken"))
    return json_response(access_token_json(ctx, ctx.access_token))


def token_retrieve(ctx: Ctx, token_id: str) -> Response:
    return json_response(access_token_json(ctx, _own_token(ctx, token_id)))


def token_update(ctx: Ctx, token_id: str) -> Response:
    _token_manager_only(ctx)
    token = _own_token(ctx, token_id)
    data = ctx.json_object()
    if "name" in data:
        token.name = str(data["name"])
    if "read_only" in data:
        token.read_only = bool(data["read_only"])
    if "expiry_date" in data:
        token.expiry_date = _parse_expiry(data["expiry_date"])
    token.updated_date = ctx.db.now()
    return json_response(access_token_json(ctx, token))


def token_delete(ctx: Ctx, token_id: str) -> Response:
    _token_manager_only(ctx)
    token = _own_token(ctx, token_id)
    del ctx.db.access_tokens[token.id]
    return Response(204)


# ---- lambda without Nuclio -------------------------------------------------------------------
def _nuclio_down(url_path: str) -> ApiError:
    return ApiError(
        503,
        "HTTPConnectionPool(host='127.0.0.1', port=8070): Max retries exceeded with url: "
        f"{url_path} (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=8070): "
        'Failed to establish a new connection: [Errno 111] Connection refused"))',
    )


def lambda_functions(ctx: Ctx) -> Response:
    raise _nuclio_down("/api/functions")


def lambda_function(ctx: Ctx, name: str) -> Response:
    raise _nuclio_down(f"/api/functions/{name}")


def lambda_request_create(ctx: Ctx) -> Response:
    data = ctx.json_object()
    raise _nuclio_down(f"/api/functions/{data.get('function', '')}")


def lambda_requests(ctx: Ctx) -> Response:
    return json_response([])


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/server/about", {"GET": about}, public=("GET",))
    router.add(r"/api/auth/login", {"POST": login}, public=("POST",))
    router.add(r"/api/auth/logout", {"GET": logout, "POST": logout}, public=("GET", "POST"))
    router.add(r"/api/auth/register", {"POST": register}, public=("POST",))
    router.add(r"/api/users/self", {"GET": users_self})
    router.add(r"/api/users", {"GET": users_list})
    router.add(r"/api/users/(?P<user_id>\d+)", {"GET": user_retrieve})
    if profile.access_tokens:
        router.add(r"/api/auth/access_tokens", {"GET": token_list, "POST": token_create})
        router.add(r"/api/auth/access_tokens/self", {"GET": token_self})
        router.add(
            r"/api/auth/access_tokens/(?P<token_id>\d+)",
            {"GET": token_retrieve, "PATCH": token_update, "DELETE": token_delete},
        )
    router.add(r"/api/lambda/functions", {"GET": lambda_functions})
    router.add(r"/api/lambda/functions/(?P<name>[a-zA-Z0-9_.-]+)", {"GET": lambda_function, "POST": lambda_function})
    router.add(r"/api/lambda/requests", {"GET": lambda_requests, "POST": lambda_request_create})
