"""Audiences of many contacts: a documented subset of MongoDB query syntax, compiled to SQLAlchemy.

Operators: $eq $ne $in $nin $gt $gte $lt $lte $exists $and $or $not, implicit equality and dotted paths.
`email`, `phone`, `external_id` and `_id` (also `id`, `profile_id`) are the contact's own columns; every
other path is a custom field. On a `tags` field, equality means "carries this tag", as in MongoDB arrays.
A field holding JSON null counts as missing (SQL cannot tell the two apart portably).
"""

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pydantic import JsonValue
from sqlalchemy import ColumnElement, Row, Select, and_, cast, exists, false, func, not_, or_, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from tripmail.contacts import normalize_phone
from tripmail.errors import InvalidRequest
from tripmail.fields import coerce_field_value
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


class QueryError(InvalidRequest):
    code = "invalid-query"


class QueryCompiler:
    """Compiles one query for one workspace's field types and one SQL dialect."""

    def __init__(self, field_types: dict[str, str], dialect: str) -> None:
        self.field_types = field_types
        self.dialect = dialect

    def compile(self, query: JsonValue, where: str = "custom_request") -> ColumnElement[bool]:
        if not isinstance(query, dict):
            raise QueryError(f"{where}: a query is an object, got {type(query).__name__}", field=where)
        clauses = []
        for key, value in query.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise QueryError(f"{where}.{key}: expects a non-empty list of queries", field=f"{where}.{key}")
                parts = [self.compile(item, f"{where}.{key}[{index}]") for index, item in enumerate(value)]
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
            return or_(self._missing(path), not_(self._equals(path, operand, where)))
        if op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise QueryError(f"{where}: {op} expects a list, got {type(operand).__name__}", field=where)
            matches = self._one_of(path, operand, where)
            return matches if op == "$in" else or_(self._missing(path), not_(matches))
        if op in COMPARISONS:
            if isinstance(operand, bool) or not isinstance(operand, int | float | str):
                raise QueryError(f"{where}: {op} expects a number or text, got {operand!r}", field=where)
            compared: ColumnElement[bool] = COMPARISONS[op](*self._compared(path, operand, where))
            return compared
        if op == "$exists":
            if not isinstance(operand, bool):
                raise QueryError(f"{where}: $exists expects true or false, got {operand!r}", field=where)
            return not_(self._missing(path)) if operand else self._missing(path)
        if op == "$not":
            if not isinstance(operand, dict) or not all(key.startswith("$") for key in operand):
                raise QueryError(f"{where}: $not expects an object of operators", field=where)
            return or_(self._missing(path), not_(self._condition(path, operand, where)))
        raise QueryError(f"{where}: unknown operator {op} on {path}", field=where)

    def _equals(self, path: str, operand: JsonValue, where: str) -> ColumnElement[bool]:
        if operand is None:
            return self._missing(path)
        if isinstance(operand, dict | list):
            raise QueryError(f"{where}: compare {path} with text, a number or true/false", field=where)
        if self.field_types.get(path) == "tags":
            if not isinstance(operand, str):
                raise QueryError(f"{where}: {path} is a tags field; compare it with text", field=where)
            return self._has_tag(path, operand)
        stored, typed = self._compared(path, operand, where)
        equal: ColumnElement[bool] = stored == typed
        return equal

    def _one_of(self, path: str, items: list[JsonValue], where: str) -> ColumnElement[bool]:
        """SQL IN per value type, not a chain of ORs: a list of thousands stays one shallow expression."""
        if self.field_types.get(path) == "tags" or None in items:
            return or_(false(), *(self._equals(path, item, where) for item in items))
        groups: dict[type, tuple[Any, list[JsonValue]]] = {}
        for item in items:
            if isinstance(item, dict | list):
                raise QueryError(f"{where}: compare {path} with text, a number or true/false", field=where)
            stored, typed = self._compared(path, item, where)
            groups.setdefault(type(typed), (stored, []))[1].append(typed)
        return or_(false(), *(stored.in_(values) for stored, values in groups.values()))

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
        value = Contact.fields[tuple(path.split("."))]
        if isinstance(operand, bool):
            return value.as_boolean(), operand
        if isinstance(operand, int | float):
            return value.as_float(), operand
        return value.as_string(), operand

    def _missing(self, path: str) -> ColumnElement[bool]:
        missing: ColumnElement[bool] = (
            COLUMNS[path].is_(None) if path in COLUMNS else Contact.fields[tuple(path.split("."))].as_string().is_(None)
        )
        return missing

    def _has_tag(self, path: str, tag: str) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            has_tag: ColumnElement[bool] = cast(Contact.fields, JSONB)[tuple(path.split("."))].contains([tag])
            return has_tag
        members = func.json_each(Contact.fields, "$." + ".".join(f'"{part}"' for part in path.split("."))).table_valued(
            "value"
        )
        return exists(select(1).select_from(members).where(members.c.value == tag))


def field_types(session: Session, workspace_id: int) -> dict[str, str]:
    rows = session.execute(
        select(ContactField.name, ContactField.type).where(ContactField.workspace_id == workspace_id)
    )
    return {row.name: row.type for row in rows}


def compile_query(session: Session, workspace_id: int, query: JsonValue) -> ColumnElement[bool]:
    """The query as a SQL condition; QueryError names the operator and path of any mistake."""
    dialect = session.get_bind().dialect.name
    return QueryCompiler(field_types(session, workspace_id), dialect).compile(query)


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
