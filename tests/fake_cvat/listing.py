"""List endpoints: simple filters, JSON-logic ``filter``, ``search``, ``sort`` and pagination.

Behaviour follows CVAT (DRF + its JsonLogicFilter): invalid choices and non-JSON filters are
400s with CVAT's bodies, unknown ``sort`` fields are ignored, pages hold 10 items unless
``page_size`` says otherwise (``all`` allowed), and ``next``/``previous`` are absolute URLs
with the query keys sorted (the link back to page 1 drops ``page``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from tests.fake_cvat.web import ApiError, Ctx, Response, bad_request, json_response

DEFAULT_PAGE_SIZE = 10


@dataclass(frozen=True)
class Field:
    """A filterable/sortable field: its kind (int, str, choice, datetime, bool) and getter."""

    kind: str
    get: Callable[[Any], Any]
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListSpec:
    """The filter, search and sort configuration of one list endpoint."""

    fields: dict[str, Field]
    simple_filters: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    default_sort: tuple[str, ...] = ("-id",)


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _coerce(spec: Field, value: Any) -> Any:
    """Bring a filter literal to the field's type (ValueError when impossible)."""
    if value is None:
        return None
    if spec.kind == "int":
        return int(value)
    if spec.kind == "datetime":
        return _parse_datetime(value)
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("true", "1")
    return str(value)


def _simple_filters(ctx: Ctx, items: list, spec: ListSpec) -> list:
    errors: dict[str, list[str]] = {}
    wanted: list[tuple[Field, Any]] = []
    for name in spec.simple_filters:
        raw = ctx.q(name)
        if raw is None:
            continue
        field_spec = spec.fields[name]
        if field_spec.kind == "choice" and raw not in field_spec.choices:
            errors[name] = [f"Select a valid choice. {raw} is not one of the available choices."]
            continue
        try:
            wanted.append((field_spec, _coerce(field_spec, raw)))
        except ValueError:
            errors[name] = ["Enter a number." if field_spec.kind == "int" else "Enter a valid value."]
    if errors:
        raise bad_request(errors)
    return [item for item in items if all(f.get(item) == value for f, value in wanted)]


class _FilterError(Exception):
    pass


def _evaluate(expr: Any, item: Any, spec: ListSpec) -> Any:
    """Evaluate a JSON-logic expression against one item."""
    if isinstance(expr, list):
        return [_evaluate(e, item, spec) for e in expr]
    if not isinstance(expr, dict):
        return expr
    if len(expr) != 1:
        raise _FilterError("filter: a rule must have exactly one operator")
    op, args = next(iter(expr.items()))
    if op == "var":
        name = args[0] if isinstance(args, list) else args
        if name not in spec.fields:
            raise _FilterError(f"filter: Unsupported filter field: {name}")
        return _Var(spec.fields[name], spec.fields[name].get(item))
    if not isinstance(args, list):
        args = [args]
    if op == "and":
        return all(_truthy(_evaluate(a, item, spec)) for a in args)
    if op == "or":
        return any(_truthy(_evaluate(a, item, spec)) for a in args)
    if op in ("!", "not"):
        return not _truthy(_evaluate(args[0], item, spec))
    if op in _COMPARISONS:
        values = [_evaluate(a, item, spec) for a in args]
        if len(values) == 3 and op in ("<", "<="):  # between: {"<=": [low, {"var": f}, high]}
            return _compare(op, values[0], values[1]) and _compare(op, values[1], values[2])
        if len(values) != 2:
            raise _FilterError(f"filter: '{op}' needs two arguments")
        return _compare(op, values[0], values[1])
    if op == "in":
        if len(args) != 2:
            raise _FilterError("filter: 'in' needs two arguments")
        needle, haystack = (_evaluate(a, item, spec) for a in args)
        if isinstance(haystack, _Var):  # {"in": ["text", {"var": field}]}: substring
            value = haystack.value
            return (
                value is not None
                and str(needle.value if isinstance(needle, _Var) else needle).lower() in str(value).lower()
            )
        if isinstance(needle, _Var) and isinstance(haystack, list):
            try:
                options = [_coerce(needle.field, h) for h in haystack]
            except ValueError as err:
                raise _FilterError(f"filter: {err}") from err
            return needle.value in options
        raise _FilterError("filter: unsupported 'in' rule")
    raise _FilterError(f"filter: unsupported operator '{op}'")


@dataclass(frozen=True)
class _Var:
    field: Field
    value: Any


def _truthy(value: Any) -> bool:
    return bool(value.value if isinstance(value, _Var) else value)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(right, _Var) and not isinstance(left, _Var):
        left, right = right, left
        op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
    if isinstance(left, _Var):
        try:
            literal = _coerce(left.field, right.value if isinstance(right, _Var) else right)
        except ValueError as err:
            raise _FilterError(f"filter: {err}") from err
        value = left.value
    else:
        value, literal = left, right
    if value is None or literal is None:
        return _COMPARISONS[op](value, literal) if op in ("==", "!=") else False
    return _COMPARISONS[op](value, literal)


def _json_filter(ctx: Ctx, items: list, spec: ListSpec) -> list:
    raw = ctx.q("filter")
    if not raw:
        return items
    try:
        expr = json.loads(raw)
    except ValueError as err:
        raise bad_request(ctx.profile.bad_filter(str(err))) from err
    try:
        return [item for item in items if _truthy(_evaluate(expr, item, spec))]
    except _FilterError as err:
        raise bad_request([str(err)]) from err
    except TypeError as err:
        raise bad_request([f"filter: {err}"]) from err


def _search(ctx: Ctx, items: list, spec: ListSpec) -> list:
    term = (ctx.q("search") or "").strip().lower()
    if not term or not spec.search:
        return items

    def hit(item: Any) -> bool:
        return any(
            (value := spec.fields[name].get(item)) is not None and term in str(value).lower() for name in spec.search
        )

    return [item for item in items if hit(item)]


def _sort(ctx: Ctx, items: list, spec: ListSpec) -> list:
    requested = [s.strip() for s in (ctx.q("sort") or "").split(",") if s.strip()]
    keys = [s for s in requested if s.lstrip("-") in spec.fields] or list(spec.default_sort)
    result = list(items)
    for key in reversed(keys):
        descending = key.startswith("-")
        getter = spec.fields[key.lstrip("-")].get
        # PostgreSQL order: NULLs last ascending, first descending
        result.sort(
            key=lambda item: (getter(item) is None, getter(item) if getter(item) is not None else 0), reverse=descending
        )
    return result


def select(ctx: Ctx, items: Iterable, spec: ListSpec) -> list:
    """Filter, search and sort ``items`` as the request asks."""
    result = _simple_filters(ctx, list(items), spec)
    result = _json_filter(ctx, result, spec)
    result = _search(ctx, result, spec)
    return _sort(ctx, result, spec)


def _page_url(ctx: Ctx, page: int | None) -> str:
    query = parse_qs(ctx.raw_query, keep_blank_values=True)
    if page is None:
        query.pop("page", None)
    else:
        query["page"] = [str(page)]
    encoded = urlencode(sorted(query.items()), doseq=True)
    return ctx.abs_url(ctx.path) + (f"?{encoded}" if encoded else "")


def paginate(ctx: Ctx, items: list, render: Callable[[Any], Any]) -> Response:
    """One page of ``items`` as ``{count, next, previous, results}``."""
    raw_size = ctx.q("page_size")
    page_size = DEFAULT_PAGE_SIZE
    if raw_size == "all":
        page_size = max(len(items), 1)
    elif raw_size and raw_size.isdigit() and int(raw_size) > 0:
        page_size = int(raw_size)
    pages = max(1, math.ceil(len(items) / page_size))
    raw_page = ctx.q("page", "1")
    if raw_page == "last":
        raw_page = str(pages)
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= pages:
        raise ApiError(404, {"detail": "Invalid page."})
    page = int(raw_page)
    chunk = items[(page - 1) * page_size : page * page_size]
    return json_response(
        {
            "count": len(items),
            "next": _page_url(ctx, page + 1) if page < pages else None,
            "previous": (_page_url(ctx, None if page == 2 else page - 1) if page > 1 else None),
            "results": [render(item) for item in chunk],
        }
    )


def list_response(ctx: Ctx, items: Iterable, spec: ListSpec, render: Callable[[Any], Any]) -> Response:
    """The whole list pipeline: select, then paginate."""
    return paginate(ctx, select(ctx, items, spec), render)
