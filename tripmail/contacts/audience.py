"""Audiences of many contacts: a documented subset of MongoDB query syntax, compiled to SQLAlchemy.

Operators: $eq $ne $in $nin $gt $gte $lt $lte $exists $and $or $not, implicit equality and dotted paths.
`email`, `phone`, `external_id` and `_id` (also `id`, `profile_id`) are the contact's own columns; every
other path is a custom field. On a `tags` field, equality means "carries this tag", as in MongoDB arrays.
A field holding JSON null counts as missing (SQL cannot tell the two apart portably). As in MongoDB, a comparison
with a number (or true/false) matches only a field holding a number (or true/false): a field holding "abc" is
neither equal to nor greater than 5, on both databases.
"""

import re
from collections.abc import Callable
from contextlib import suppress
from decimal import Decimal
from typing import Any

from pydantic import JsonValue
from sqlalchemy import (
    ColumnElement,
    Numeric,
    Row,
    Select,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeDecorator

from tripmail.contacts.fields import coerce_field_value
from tripmail.contacts.identity import normalize_phone
from tripmail.errors import InvalidRequest
from tripmail.models import Contact, ContactField

COLUMNS = {
    "_id": Contact.id,
    "id": Contact.id,
    "profile_id": Contact.id,
    "email": Contact.email,
    "phone": Contact.phone,
    "external_id": Contact.external_id,
}
COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "$gt": lambda left, right: left > right,
    "$gte": lambda left, right: left >= right,
    "$lt": lambda left, right: left < right,
    "$lte": lambda left, right: left <= right,
}
CHUNK = 1000
# Far beyond any audience people write, and well within the recursion both Python and SQLAlchemy's SQL compiler
# allow (a $not inside a $not fails at 100 levels, an $and/$or alternation at 150).
MAX_NESTING = 32
# SQLite parses `a OR b OR ...` into a tree as deep as its terms and refuses one deeper than 1000.
MAX_CONDITIONS = 500
# Each list item is a variable bound to the page query, and SQLite binds at most 32,766 to one statement (250,000
# as Debian builds it; PostgreSQL's protocol 65,535): past them the query fails in the database, as often as it is
# tried. With the few that each of at most MAX_CONDITIONS keys binds (its path, its type test, its value: about 20
# for a short list of four types), 25,000 conditions and list items stay within SQLite's limit. The api refuses a
# query past Settings.query_max_terms, at most this.
MAX_TERMS = 25_000


class QueryError(InvalidRequest):
    code = "invalid-query"


class _ExactNumber(TypeDecorator[Decimal]):
    """NUMERIC for a stored number and for every operand compared with it: compared as double precision, a stored
    JSON number past its range (1e400) raised DataError on PostgreSQL."""

    impl = Numeric
    cache_ok = True

    def bind_expression(self, bindvalue: BindParameter[Decimal]) -> ColumnElement[Decimal]:
        return cast(bindvalue, Numeric)


class QueryCompiler:
    """Compiles one query for one workspace's field types and one SQL dialect."""

    def __init__(self, field_types: dict[str, str], dialect: str, *, max_terms: int = MAX_TERMS) -> None:
        self.field_types = field_types
        self.dialect = dialect
        self.max_terms = max_terms

    def compile(self, query: JsonValue, where: str = "custom_request") -> ColumnElement[bool]:
        _check_document(query, where, max_terms=self.max_terms)
        return self._query(query, where)

    def _query(self, query: JsonValue, where: str) -> ColumnElement[bool]:
        if not isinstance(query, dict):
            raise QueryError(f"{where}: a query is an object, got {type(query).__name__}", field=where)
        clauses = []
        for key, value in query.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise QueryError(f"{where}.{key}: expects a non-empty list of queries", field=f"{where}.{key}")
                parts = [self._query(item, f"{where}.{key}[{index}]") for index, item in enumerate(value)]
                clauses.append(and_(*parts) if key == "$and" else or_(*parts))
            elif key.startswith("$"):
                raise QueryError(f"{where}: unknown operator {key} at the top level", field=f"{where}.{key}")
            else:
                clauses.append(self._condition(key, value, f"{where}.{key}"))
        return and_(true(), *clauses)

    def _condition(self, path: str, condition: JsonValue, where: str) -> ColumnElement[bool]:
        if isinstance(condition, dict) and any(key.startswith("$") for key in condition):
            return and_(*(self._operator(path, op, operand, f"{where}.{op}") for op, operand in condition.items()))
        return self._equals(path, condition, where)

    def _operator(self, path: str, op: str, operand: JsonValue, where: str) -> ColumnElement[bool]:
        if op == "$eq":
            return self._equals(path, operand, where)
        if op == "$ne":
            return or_(self._missing(path, where), not_(self._equals(path, operand, where)))
        if op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise QueryError(f"{where}: {op} expects a list, got {type(operand).__name__}", field=where)
            matches = self._one_of(path, operand, where)
            return matches if op == "$in" else or_(self._missing(path, where), not_(matches))
        if op in COMPARISONS:
            if isinstance(operand, bool) or not isinstance(operand, int | float | str):
                raise QueryError(f"{where}: {op} expects a number or text, got {operand!r}", field=where)
            stored, typed = self._compared(path, operand, where)
            return self._where_typed(path, typed, COMPARISONS[op](stored, typed), where)
        if op == "$exists":
            if not isinstance(operand, bool):
                raise QueryError(f"{where}: $exists expects true or false, got {operand!r}", field=where)
            return not_(self._missing(path, where)) if operand else self._missing(path, where)
        if op == "$not":
            if not isinstance(operand, dict) or not all(key.startswith("$") for key in operand):
                raise QueryError(f"{where}: $not expects an object of operators", field=where)
            return or_(self._missing(path, where), not_(self._condition(path, operand, where)))
        raise QueryError(f"{where}: unknown operator {op} on {path}", field=where)

    def _equals(self, path: str, operand: JsonValue, where: str) -> ColumnElement[bool]:
        if operand is None:
            return self._missing(path, where)
        if isinstance(operand, dict | list):
            raise QueryError(f"{where}: compare {path} with text, a number or true/false", field=where)
        if self.field_types.get(path) == "tags":
            if not isinstance(operand, str):
                raise QueryError(f"{where}: {path} is a tags field; compare it with text", field=where)
            return self._has_tag(_field_path(path, where), [operand])
        stored, typed = self._compared(path, operand, where)
        return self._where_typed(path, typed, stored == typed, where)

    def _one_of(self, path: str, items: list[JsonValue], where: str) -> ColumnElement[bool]:
        """SQL IN per value type, not a chain of ORs: a list of thousands stays one shallow expression."""
        if None in items:
            present: list[JsonValue] = [item for item in items if item is not None]
            return or_(self._missing(path, where), self._one_of(path, present, where))
        if self.field_types.get(path) == "tags":
            tags = [item for item in items if isinstance(item, str)]
            if len(tags) < len(items):
                raise QueryError(f"{where}: {path} is a tags field; compare it with text", field=where)
            return self._has_tag(_field_path(path, where), tags) if tags else false()
        groups: dict[type, tuple[Any, list[JsonValue]]] = {}
        for item in items:
            if isinstance(item, dict | list):
                raise QueryError(f"{where}: compare {path} with text, a number or true/false", field=where)
            stored, typed = self._compared(path, item, where)
            groups.setdefault(type(typed), (stored, []))[1].append(typed)
        return or_(
            false(),
            *(self._where_typed(path, values[0], stored.in_(values), where) for stored, values in groups.values()),
        )

    def _compared(self, path: str, operand: JsonValue, where: str) -> tuple[Any, JsonValue]:
        """The stored value at `path` and the operand, both of the field's declared type (else the operand's).

        Typing by the declaration keeps the SQL one type on both sides, which PostgreSQL requires.
        """
        if path == "phone" and isinstance(operand, str | int) and not isinstance(operand, bool):
            # Phones are stored in E.164; a query may write them as people do.
            with suppress(ValueError):
                return COLUMNS[path], normalize_phone(str(operand))
        if path in COLUMNS:
            return COLUMNS[path], str(operand)
        declared = self.field_types.get(path)
        if declared is not None:
            try:
                operand = coerce_field_value(declared, operand)
            except ValueError as exc:
                raise QueryError(f"{where}: {path} is a {declared} field: {exc}", field=where) from exc
        value = Contact.fields[_field_path(path, where)]
        if isinstance(operand, bool):
            return value.as_boolean(), operand
        if isinstance(operand, int | float):
            if isinstance(operand, int) and not -(2**63) <= operand < 2**63:
                raise QueryError(f"{where}: {operand} is beyond the 64-bit integers a database compares", field=where)
            if self.dialect == "postgresql":
                return cast(value.as_string(), _ExactNumber), operand
            return value.as_float(), operand
        return value.as_string(), operand

    def _where_typed(
        self, path: str, operand: JsonValue, condition: ColumnElement[bool], where: str
    ) -> ColumnElement[bool]:
        """`condition` on a custom field compared with a number or true/false, false where the field holds another
        JSON type. A CASE, not an AND: PostgreSQL may evaluate either side of an AND first, and CAST('abc' AS FLOAT)
        raises DataError, which failed the whole query."""
        if path in COLUMNS or not isinstance(operand, bool | int | float):
            return condition
        names = _field_path(path, where)
        if self.dialect == "postgresql":
            kind = func.json_typeof(Contact.fields[names])
            kinds = ["boolean"] if isinstance(operand, bool) else ["number"]
        else:
            kind = func.json_type(Contact.fields, _sqlite_path(names))
            kinds = ["true", "false"] if isinstance(operand, bool) else ["integer", "real"]
        typed: ColumnElement[bool] = case((kind.in_(kinds), condition), else_=false())
        return typed

    def _missing(self, path: str, where: str) -> ColumnElement[bool]:
        missing: ColumnElement[bool] = (
            COLUMNS[path].is_(None)
            if path in COLUMNS
            else Contact.fields[_field_path(path, where)].as_string().is_(None)
        )
        return missing

    def _has_tag(self, path: tuple[str, ...], tags: list[str]) -> ColumnElement[bool]:
        """Carries any of `tags`: one test of the list, not one per tag, so thousands of tags stay shallow SQL."""
        if self.dialect == "postgresql":
            has_tag: ColumnElement[bool] = cast(Contact.fields, JSONB)[path].has_any(array(tags))
            return has_tag
        members = func.json_each(Contact.fields, _sqlite_path(path)).table_valued("value")
        return exists(select(1).select_from(members).where(members.c.value.in_(tags)))


def _check_document(query: JsonValue, where: str, *, max_terms: int) -> None:
    """Refuse a query nested past MAX_NESTING objects and lists, with more than MAX_CONDITIONS keys in all, more than
    `max_terms` keys and list items in all, or holding a NUL character (PostgreSQL text cannot); a loop, so the check
    cannot itself recurse too deep."""
    pending: list[tuple[JsonValue, str, int]] = [(query, where, 1)]
    conditions = 0
    terms = 0
    while pending:
        value, place, depth = pending.pop()
        if depth > MAX_NESTING:
            raise QueryError(f"{place}: the query nests deeper than {MAX_NESTING} levels", field=place)
        if isinstance(value, dict):
            conditions += len(value)
            if conditions > MAX_CONDITIONS:
                raise QueryError(
                    f"{where}: a query holds at most {MAX_CONDITIONS} conditions (keys of its objects); "
                    "many values of one field go in one $in",
                    field=where,
                )
        if isinstance(value, dict | list):
            terms += len(value)
            if terms > max_terms:
                raise QueryError(
                    f"{place}: a query holds at most {max_terms} conditions and list items in all; with the "
                    f"{len(value)} here it holds {terms}",
                    field=place,
                )
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if (isinstance(key, str) and "\x00" in key) or (isinstance(item, str) and "\x00" in item):
                raise QueryError(
                    f"{place}: a key or value holds the character NUL, which query text cannot", field=place
                )
            if isinstance(item, dict | list):
                pending.append((item, f"{place}[{key}]" if isinstance(key, int) else f"{place}.{key}", depth + 1))


# Each name of a dotted path goes unquoted into a JSON path: SQLite's '$."a"."b"', PostgreSQL's text array '{a, b}'.
_UNSAFE_IN_PATH = re.compile(r'["\\,{}\x00-\x1f]|^\s|\s$')


def _sqlite_path(names: tuple[str, ...]) -> str:
    return "$." + ".".join(f'"{name}"' for name in names)


def _field_path(path: str, where: str) -> tuple[str, ...]:
    """A custom field's dotted path as its names; QueryError when a name cannot be written into a JSON path."""
    names = tuple(path.split("."))
    if any(not name or _UNSAFE_IN_PATH.search(name) for name in names):
        raise QueryError(
            f"{where}: {path!r} is not a field path: its names, between dots, are not empty, neither start nor end "
            'with a space, and hold no control character and none of " \\ , { }',
            field=where,
        )
    return names


def field_types(session: Session, workspace_id: int) -> dict[str, str]:
    rows = session.execute(
        select(ContactField.name, ContactField.type).where(ContactField.workspace_id == workspace_id)
    )
    return {row.name: row.type for row in rows}


def compile_query(
    session: Session,
    workspace_id: int,
    query: JsonValue,
    *,
    max_terms: int = MAX_TERMS,
    where: str = "custom_request",
) -> ColumnElement[bool]:
    """The query as a SQL condition; QueryError names the operator and path of any mistake, `where` first.

    The api passes the budget of its settings; the worker compiles what the api accepted, within what the database
    binds.
    """
    dialect = session.get_bind().dialect.name
    return QueryCompiler(field_types(session, workspace_id), dialect, max_terms=max_terms).compile(query, where)


def custom_field_query(field_types: dict[str, str], name: str, value: JsonValue) -> dict[str, JsonValue]:
    """altcraft's `field_name`/`field_value` as a query; on a tags field "tag-1, tag-2" means both tags."""
    if field_types.get(name) == "tags" and isinstance(value, str):
        return {"$and": [{name: tag.strip()} for tag in value.split(",") if tag.strip()]}
    return {name: value}


def contacts_page(
    session: Session, workspace_id: int, condition: ColumnElement[bool], *, after: str, limit: int
) -> list[Contact]:
    """The next `limit` matching contacts after the contact id `after`: keyset paging, never OFFSET."""
    return list(session.scalars(_page(select(Contact), workspace_id, condition, after=after, limit=limit)))


def recipients_page(
    session: Session, workspace_id: int, condition: ColumnElement[bool], *, after: str, limit: int
) -> list[Row[tuple[str, str | None, dict[str, Any]]]]:
    """As contacts_page, but only what planning a message reads, for audiences the trigger does not change."""
    columns = select(Contact.id, Contact.email, Contact.consents)
    return list(session.execute(_page(columns, workspace_id, condition, after=after, limit=limit)))


def _page(
    query: Select[Any], workspace_id: int, condition: ColumnElement[bool], *, after: str, limit: int
) -> Select[Any]:
    return (
        query.where(Contact.workspace_id == workspace_id, condition, Contact.id > after)
        .order_by(Contact.id)
        .limit(limit)
    )
