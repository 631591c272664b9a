"""Properties of the text users write for Tripmail to read: audience queries and templates.

Whatever is written either translates or is refused with Tripmail's own error naming where; no other exception
(KeyError, RecursionError, a database error...) escapes, and no template reaches Python's internals.
"""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import make_contact, make_workspace, password_reset_spec
from tripmail.contacts.audience import (
    MAX_CONDITIONS,
    MAX_NESTING,
    QueryCompiler,
    QueryError,
    compile_query,
    contacts_page,
)
from tripmail.errors import InvalidConfig
from tripmail.models import Contact
from tripmail.rendering.templates import RenderError, check_template, render_part, template_context

FIELDS = [
    {"name": "age", "type": "number"},
    {"name": "vip", "type": "boolean"},
    {"name": "born", "type": "date"},
    {"name": "tags", "type": "tags"},
    {"name": "nick", "type": "string"},
]
FIELD_TYPES = {field["name"]: field["type"] for field in FIELDS}
OPERATORS = ["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$and", "$or", "$not"]
PATHS = ["email", "phone", "_id", "id", "external_id", "addr.city", "a..b", "", ".", 'a"b', "a\x00", " a", *FIELD_TYPES]

keys = st.sampled_from([*OPERATORS, "$regex", "$", *PATHS]) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**400])
    | st.floats()
    | st.sampled_from(["+380501234567", "380501234567", "2026-01-01", "true", "31", "1e400", "nan", "tag-1"])
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=16,
)
queries = st.dictionaries(keys, json_values, max_size=4) | json_values


def nested_and(levels: int) -> dict[str, JsonValue]:
    query: dict[str, JsonValue] = {"age": 1}
    for _ in range(levels):
        query = {"$and": [query, {"vip": True}]}
    return query


def nested_not(levels: int) -> dict[str, JsonValue]:
    condition: dict[str, JsonValue] = {"$eq": 1}
    for _ in range(levels):
        condition = {"$not": condition}
    return {"age": condition}


# Made without connecting: compiling SQL for a backend needs only its dialect.
DIALECTS = [create_engine("sqlite://").dialect, create_engine("postgresql+psycopg://").dialect]


def assert_names_its_place(error: QueryError) -> None:
    assert error.detail.startswith("custom_request")
    assert error.field is not None and error.field.startswith("custom_request")


@settings(max_examples=400, deadline=None)
@given(query=queries)
def test_any_query_compiles_to_sql_or_is_refused_naming_where(query: JsonValue) -> None:
    for dialect in DIALECTS:
        try:
            condition = QueryCompiler(FIELD_TYPES, dialect.name).compile(query)
        except QueryError as error:
            assert_names_its_place(error)
            continue
        select(Contact.id).where(condition).compile(dialect=dialect)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def audience(sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], int]:
    with sessions.begin() as session:
        workspace_id = make_workspace(session, password_reset_spec("acme") | {"contact_fields": FIELDS})
        for index, fields in enumerate([{}, {"age": 31, "tags": ["tag-1"], "addr": {"city": "Kyiv"}, "vip": True}]):
            make_contact(
                session,
                workspace_id,
                f"c{index}@example.com",
                now=NOW,
                contact_id=f"id-{index}",
                phone="+380501234567",
                fields=fields,
            )
    return sessions, workspace_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(keys, json_values, max_size=4))
@example(query=nested_not(MAX_NESTING - 1))  # the deepest query allowed runs on both backends
@example(query=nested_and(MAX_NESTING // 2 - 1))
@example(query={"nick": "a\x00b"})
@example(query={"a\x00b": 1})
@example(query={"tags": "a\x00"})
@example(query={'a"b': 1})
@example(query={'ta"gs': {"$in": ["x"]}})
@example(query={"tags": {"$in": [str(n) for n in range(2000)]}})
@example(query={"$or": [{"age": n} for n in range(2000)]})
@example(query={"$or": [{"age": n} for n in range(MAX_CONDITIONS - 1)]})
@example(query={f"f{n}": {"$ne": n} for n in range(MAX_CONDITIONS)})
@example(query={"tags": {"$in": [None, *map(str, range(2000))]}})
@example(query={"age": 10**30})
@example(query={"Custom": 10**30})
@example(query={"Custom": {"$in": [10**30, -(10**30)]}})
@example(query={"Custom": float("nan")})
@example(query={"age": "1e400"})
@example(query={"age": "nan"})
@example(query={"email": 10**30})
@example(query={"vip": {"$gt": "x"}})
def test_any_compiled_query_runs_on_the_database(
    audience: tuple[sessionmaker[Session], int], query: dict[str, JsonValue]
) -> None:
    sessions, workspace_id = audience
    with sessions() as session:
        try:
            condition = compile_query(session, workspace_id, query)
        except QueryError as error:
            assert_names_its_place(error)
            return
        contacts_page(session, workspace_id, condition, after="", limit=10)


def test_a_query_nested_too_deep_is_refused_naming_where() -> None:
    # Found by the property above: 100 nested $not or 150 nested $and/$or raised RecursionError.
    compiler = QueryCompiler(FIELD_TYPES, "sqlite")
    with pytest.raises(QueryError, match=r"^custom_request(\.\$and\[\d\]){16}: the query nests deeper than 32 levels"):
        compiler.compile(nested_and(10_000))
    with pytest.raises(QueryError, match=r"^custom_request\.age(\.\$not){31}: the query nests deeper"):
        compiler.compile(nested_not(100))


# Velocity and Jinja pieces, whole and broken, including attempts to reach Python from a template.
FRAGMENTS = [
    "#set($a = 1)",
    "#if($data.x)",
    "#else",
    "#elseif(",
    "#end",
    "#{end}",
    "#foreach($item in $data.get('array'))",
    "#foreach($!item in ${data.list})",
    "#foreach($i in [1,2])",
    "#foreach(",
    "##",
    "#*",
    "*#",
    "#",
    "$",
    "$!",
    "${",
    "$!{",
    "$item",
    "$!item.get('name')",
    "$data",
    "$!data.get('k')",
    "${data.get(0)}",
    '$data.get("x").y',
    "$data.items",
    "$class",
    "$foo.getClass()",
    "$data.getClass().forName('os')",
    "$data.__class__",
    "${data.__globals__}",
    "$range",
    "$dict",
    "$lipsum",
    "$cycler",
    "$joiner",
    "$namespace",
    "{apicontent.name}",
    "{apicontent.items}",
    "{apicontent.}",
    "{{apicontent.name}}",
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ data.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ data.items() }}",
    "{% raw %}",
    "{% endraw %}",
    "{%",
    "%}",
    "{{",
    "}}",
    "{#",
    "#}",
    "{",
    "}",
    "(",
    ")",
    "'",
    '"',
    "\n",
    " ",
]
sources = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=12).map("".join)
names = st.sampled_from(["name", "items", "list", "k", "x", "array", "range", "dict", "class"]) | st.text(max_size=5)
data_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3),
    max_leaves=10,
)
datas = st.dictionaries(names, data_values, max_size=4)
SYNTAXES = ["jinja", "velocity", "apicontent"]
# What Python shows for its own objects: a template that shows one has reached past the data it was given.
PYTHON_INTERNALS = ["<class ", "<function ", "<built-in ", "<bound method ", "<module ", "<method", "__builtins__"]


def assert_names_the_part(error: InvalidConfig) -> None:
    assert error.detail.startswith("templates.t.text: ")


@settings(max_examples=400, deadline=None)
@given(source=sources, syntax=st.sampled_from(SYNTAXES))
def test_any_template_checks_or_is_refused_naming_where(source: str, syntax: str) -> None:
    try:
        check_template(source, name="templates.t.text", syntax=syntax)
    except InvalidConfig as error:
        assert_names_the_part(error)


@settings(max_examples=300, deadline=None)
@given(source=sources, syntax=st.sampled_from(["velocity", "apicontent"]), data=datas, html=st.booleans())
def test_a_checked_template_renders_any_data_without_reaching_python(
    source: str, syntax: str, data: dict[str, Any], html: bool
) -> None:
    try:
        check_template(source, name="templates.t.text", syntax=syntax)
    except InvalidConfig:
        return
    context = template_context({"email": "ann@example.com"}, data, {"key": "E"}, data_param=None)
    try:
        output = render_part(source, context, html=html, syntax=syntax)
    except RenderError:
        return
    given_text = source + json.dumps(data)
    assert not [marker for marker in PYTHON_INTERNALS if marker in output and marker not in given_text], output
