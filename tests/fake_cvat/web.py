"""HTTP-level building blocks: request context, responses, API errors and the route table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from tests.fake_cvat.profiles import VersionProfile
    from tests.fake_cvat.server import FakeCvat
    from tests.fake_cvat.state import AccessToken, Session, State, User

CVAT_JSON = "application/vnd.cvat+json"
HTML = "text/html; charset=utf-8"
SERVER_ERROR_HTML = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n'
    "<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)
NOT_FOUND_HTML = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n'
    "<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n"
    "</body>\n</html>\n"
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass
class Response:
    """What a route returns; the HTTP layer writes it out."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    """A JSON answer with CVAT's content type."""
    return Response(status, json.dumps(data).encode(), CVAT_JSON, list(headers or []))


def empty_response(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """An answer without a body (and without a content type)."""
    return Response(status, b"", None, list(headers or []))


class ApiError(Exception):
    """Raised by routes to answer with an error; the body is exactly what CVAT sends."""

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        content_type: str = CVAT_JSON,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers or [])

    def response(self) -> Response:
        """The error as a response."""
        if self.content_type == CVAT_JSON:
            payload = json.dumps(self.body).encode()
        else:
            payload = str(self.body).encode()
        return Response(self.status, payload, self.content_type, self.headers)


def server_error() -> ApiError:
    """Django's bare 500 page (what CVAT answers on an unhandled server exception)."""
    return ApiError(500, SERVER_ERROR_HTML, content_type=HTML)


def bad_request(body: Any) -> ApiError:
    """A 400 with a JSON body (object, list or bare string, as CVAT uses all three)."""
    return ApiError(400, body)


@dataclass
class Ctx:
    """One request as the routes see it."""

    server: FakeCvat
    method: str
    path: str
    """The path as sent (percent-encoding kept), without the query."""
    raw_query: str
    headers: Message
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    user: User | None = None
    auth: str | None = None
    """How the user authenticated: ``token``, ``pat``, ``session``, ``basic`` or None."""
    session: Session | None = None
    access_token: AccessToken | None = None
    _json: Any = field(default=None, repr=False)
    _json_loaded: bool = field(default=False, repr=False)

    @property
    def db(self) -> State:
        return self.server.db

    @property
    def profile(self) -> VersionProfile:
        return self.server.profile

    @property
    def base(self) -> str:
        """The server's own base URL, from which every absolute URL is built."""
        return self.server.url

    def abs_url(self, path: str) -> str:
        """An absolute URL on this server."""
        return self.base + path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True)

    def q(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter (Django's ``QueryDict.get``)."""
        values = self.query.get(name)
        return values[-1] if values else default

    def cookies(self) -> dict[str, str]:
        """Request cookies by name."""
        jar = SimpleCookie()
        raw = self.headers.get("Cookie")
        if raw:
            try:
                jar.load(raw)
            except CookieError:  # a malformed cookie header is ignored, as Django does
                return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def json(self, *, required: bool = True) -> Any:
        """The JSON body; a 400 like DRF's when it is not JSON."""
        if not self._json_loaded:
            self._json_loaded = True
            if not self.body.strip():
                self._json = None
            else:
                try:
                    self._json = json.loads(self.body)
                except ValueError as err:
                    raise bad_request({"detail": f"JSON parse error - {err}"}) from err
        if self._json is None and required:
            return {}
        return self._json

    def json_object(self) -> dict:
        """The JSON body, which must be an object."""
        data = self.json()
        if not isinstance(data, dict):
            raise bad_request(
                {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]}
            )
        return data


Handler = Callable[..., Response]


@dataclass
class Route:
    """One URL pattern and the handlers of its methods."""

    regex: re.Pattern
    handlers: dict[str, Handler]
    public: frozenset[str]

    @property
    def allow(self) -> str:
        methods = set(self.handlers)
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        return ", ".join(m for m in METHOD_ORDER if m in methods)


class Router:
    """Maps ``(method, path)`` to a handler. Paths match with or without a trailing slash."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, pattern: str, handlers: dict[str, Handler], *, public: tuple[str, ...] = ()) -> None:
        """Register ``pattern`` (a regex for the whole path, without the trailing slash).

        Registering the same pattern again adds methods to it (modules share paths, e.g.
        annotation CRUD and annotation import both live on ``/api/tasks/{id}/annotations``).
        """
        regex = re.compile(pattern + r"/?")
        for route in self._routes:
            if route.regex.pattern == regex.pattern:
                clash = set(route.handlers) & set(handlers)
                if clash:
                    raise ValueError(f"{pattern}: methods {sorted(clash)} registered twice")
                route.handlers.update(handlers)
                route.public = route.public | frozenset(public)
                return
        self._routes.append(Route(regex, dict(handlers), frozenset(public)))

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for ``path`` and its named groups."""
        for route in self._routes:
            found = route.regex.fullmatch(path)
            if found:
                return route, found.groupdict()
        return None
