"""The Jinja sandbox with bounds: what one template may build, output and spend, so that a template cannot hold a
worker or take its memory.

Jinja's sandbox keeps a template away from Python's internals and bounds `range`; it does not bound what a template
computes. Here every value a template builds in one step is at most `MAX_BUILT` characters (a string) or items (a
list), a number at most `MAX_NUMBER_BITS` bits, and what one render outputs at most `MAX_OUTPUT` characters. Growth
is refused before it is computed where a step can grow without bound (`*`, `**`, `%`, `~`, `join`, widths); a step
that grows its input by a small factor at most (`escape`, `upper`, ...) is checked after it ran. Each loop iteration
and macro call checks the render's deadline, so a template that loops too long fails instead of holding a worker.
"""

import functools
import inspect
import math
import re
import string
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

MAX_BUILT = 1_000_000
MAX_NUMBER_BITS = 4096
MAX_OUTPUT = 16 * 1024 * 1024
# Each level of nesting indents by this many spaces more: a deep value with a wide indent is mostly spaces.
MAX_JSON_INDENT = 16


class TemplateLimitExceeded(SecurityError):
    """A template went past one of the bounds; the message names the bound."""


class _Budget:
    __slots__ = ("deadline", "output", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.output = 0

    def charge(self, size: int) -> None:
        self.output += size
        if self.output > MAX_OUTPUT:
            raise TemplateLimitExceeded(f"the rendered text passes {MAX_OUTPUT:,} characters, the most a part may be")

    def tick(self, literal_chars: int) -> None:
        self.charge(literal_chars)
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(
                f"rendering took longer than {self.timeout_s:g} s (TRIPMAIL_RENDER_TIMEOUT_S): a loop or macro runs "
                "too long"
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("tripmail_render_budget", default=None)


def render_within(template: Template, context: dict[str, Any], *, timeout_s: float) -> str:
    """The template rendered within the bounds, counted for this render alone: a worker's threads render at once."""
    # Not a context manager: this runs for each part of each message, and one costs as much as the rest of
    # rendering a short email (bench/results.md, What the code's shape rests on).
    token = _BUDGET.set(_Budget(timeout_s))
    try:
        return template.render(context)
    finally:
        _BUDGET.reset(token)


def size_of(value: Any) -> int:
    """About how many characters `value` is as text: exact for strings, close for JSON-like data."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, dict):
        return 2 + sum(size_of(key) + size_of(item) + 4 for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 2 + sum(size_of(item) + 2 for item in value)
    return 64


def _refuse_built(what: str, size: int, unit: str = "characters") -> None:
    if size > MAX_BUILT:
        raise TemplateLimitExceeded(f"{what} would build {size:,} {unit}; a template may build at most {MAX_BUILT:,}")


# What a template can repeat or concatenate: strings, their bytes (`'a'.encode()`), lists.
_SEQUENCES = (str, bytes, list, tuple)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (*_SEQUENCES, dict)) else 0


def _unit(value: Any) -> str:
    return "characters" if isinstance(value, str | bytes) else "items"


def _check_result(what: str, value: Any, given: Any = None) -> Any:
    """`value`, unless the step built it past the bound: data that came in larger may pass through unchanged."""
    length = _length(value)
    if length > MAX_BUILT and length > _length(given):
        _refuse_built(what, length, _unit(value))
    return value


def _refuse_bits(what: str, bits: int) -> None:
    if bits > MAX_NUMBER_BITS:
        raise TemplateLimitExceeded(
            f"{what} would give a number of about {bits:,} bits; a template's numbers have at most {MAX_NUMBER_BITS:,}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _repeat(operator: str, left: Any, right: Any) -> None:
    """`*`: a sequence repeated, or a product of integers."""
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, _SEQUENCES) and isinstance(times, int):
            _refuse_built(f"{operator!r}", len(sequence) * max(times, 0), _unit(sequence))
            return
    if _is_int(left) and _is_int(right):
        _refuse_bits(f"{operator!r}", left.bit_length() + right.bit_length())


def _power(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _refuse_bits("'**'", int(math.log2(abs(left)) * right) + 1)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def _field_estimate(fmt: str, widths: list[int], fields: int, args: Any, star: bool) -> int:
    values = list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, tuple) else [args]
    largest = max((size_of(value) for value in values), default=0)
    stars = sum(abs(value) for value in values if _is_int(value)) if star else 0
    return len(fmt) + sum(widths) + stars + fields * largest


def _percent_size(fmt: str, args: Any) -> int:
    widths: list[int] = []
    fields, star = 0, False
    for spec in _PERCENT_SPEC.finditer(fmt):
        if spec[3] == "%":
            continue
        fields += 1
        for number in spec[1], spec[2]:
            if number == "*":
                star = True
            elif number:
                widths.append(int(number))
    return _field_estimate(fmt, widths, fields, args, star)


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    widths: list[int] = []
    fields, star = 0, False
    for _, name, spec, _ in string.Formatter().parse(fmt):
        if name is None:
            continue
        fields += 1
        star = star or "{" in (spec or "")
        widths += [int(number) for number in re.findall(r"\d+", spec or "")]
    return _field_estimate(fmt, widths, fields, (*args, *kwargs.values()), star)


def _binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        _repeat(operator, left, right)
    elif operator == "**":
        _power(left, right)
    elif operator == "%" and isinstance(left, str | bytes):
        _refuse_built("'%'", _percent_size(left.decode("latin-1") if isinstance(left, bytes) else left, right))
    elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _refuse_built("'+'", len(left) + len(right), _unit(left))


def _stringified(what: str, value: Any) -> None:
    """A filter or method that turns its input into text first: a list of large strings is large text."""
    if not isinstance(value, str):
        _refuse_built(what, size_of(value))


def _joined(what: str, items: list[Any], separator: Any) -> None:
    _refuse_built(what, sum(size_of(item) for item in items) + size_of(separator) * len(items))


def _replaced(what: str, text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if all(isinstance(part, str) for part in (text, old, new)) or all(
        isinstance(part, bytes) for part in (text, old, new)
    ):
        found = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            found = min(found, count)
        _refuse_built(what, len(text) + found * max(len(new) - len(old), 0))


def _width(what: str, text: Any, width: Any) -> None:
    if _is_int(width):
        _refuse_built(what, max(size_of(text), width))


def _indented(text: Any, width: Any) -> None:
    prefix = width if _is_int(width) else size_of(width)
    lines = text.count("\n") + 1 if isinstance(text, str) else 1
    _refuse_built("indent", size_of(text) + lines * prefix)


def _wrapped(text: Any, wrapstring: Any) -> None:
    # A line holds one word at least: at most one break for every two characters.
    _refuse_built("wordwrap", size_of(text) + (size_of(text) // 2 + 1) * size_of(wrapstring or "\n"))


def _urlized(text: Any, target: Any, rel: Any) -> None:
    # Each word may become a link that carries the target and rel.
    words = len(text.split()) if isinstance(text, str) else 1
    _refuse_built("urlize", 2 * size_of(text) + words * (size_of(target) + size_of(rel)))


def _count(what: str, count: Any) -> None:
    if _is_int(count):
        _refuse_built(what, count, "items")


def _json_indent(indent: Any) -> None:
    if _is_int(indent) and indent > MAX_JSON_INDENT:
        raise TemplateLimitExceeded(f"tojson's indent is {indent:,}; it may be at most {MAX_JSON_INDENT}")


# Before a call: each check takes the arguments as the filter or method has them bound.
_FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": lambda a: _width("center", a["value"], a.get("width", 80)),
    "indent": lambda a: _indented(a["s"], a.get("width", 4)),
    "wordwrap": lambda a: _wrapped(a["s"], a.get("wrapstring")),
    "replace": lambda a: _replaced("replace", a["s"], a["old"], a["new"], a.get("count")),
    "format": lambda a: _refuse_built("format", _percent_size(str(a["value"]), a.get("args") or a.get("kwargs"))),
    "urlize": lambda a: _urlized(a["value"], a.get("target"), a.get("rel")),
    "batch": lambda a: _count("batch", a["linecount"]),
    "slice": lambda a: _count("slice", a["slices"]),
    "tojson": lambda a: _json_indent(a.get("indent")),
}
# Filters that read their input as text.
_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint", "replace", "safe",
        "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize", "wordcount",
        "wordwrap", "xmlattr",
    }
)  # fmt: skip


def _bounded_filter(name: str, filter_function: Callable[..., Any], *, reads_text: bool) -> Callable[..., Any]:
    signature = inspect.signature(filter_function)
    check = _FILTER_CHECKS.get(name)
    value_index = 1 if hasattr(filter_function, "jinja_pass_arg") else 0
    # Jinja's filters with an async variant take the pass argument without declaring it.
    declares_pass_arg = next(iter(signature.parameters), "") in ("context", "eval_ctx", "environment")
    bind_from = 0 if declares_pass_arg else value_index

    @functools.wraps(filter_function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if reads_text and len(args) > value_index:
            _stringified(name, args[value_index])
        if check is not None:
            bound = signature.bind(*args[bind_from:], **kwargs)
            check(bound.arguments)
        given = args[value_index] if len(args) > value_index else None
        return _check_result(name, filter_function(*args, **kwargs), given)

    return bounded


@pass_context
def _join(context: Context, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    _joined("join", items, d)
    joined: str = FILTERS["join"](context.eval_ctx, items, d)
    return joined


@pass_context
def _sum(context: Context, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    items = list(iterable)
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    if isinstance(start, _SEQUENCES):
        _refuse_built("sum", len(start) + sum(_length(item) for item in items), _unit(start))
    return sum(items, start)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if _is_int(n) and _is_int(max):
        _refuse_built("lipsum", n * max * 12)
    return generate_lorem_ipsum(n, html, min, max)


def _method_check(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """A str method that can grow its string without bound, called from a template; the arguments to call it with
    (what `join` joins is read once, to count it)."""
    wrapped = getattr(method, "__wrapped__", method)  # the sandbox's wrapper of str.format
    owner = getattr(wrapped, "__self__", None)
    if isinstance(owner, bytes):
        owner = owner.decode("latin-1")  # the same length, for the estimates
    if not isinstance(owner, str):
        return args
    name = wrapped.__name__
    given: list[Any] = [
        value.decode("latin-1") if isinstance(value, bytes) else value for value in (*args, *kwargs.values())
    ]
    if name in ("center", "ljust", "rjust", "zfill") and given:
        _width(name, owner, given[0])
    elif name == "expandtabs":
        size: int = given[0] if given and _is_int(given[0]) else 8
        _refuse_built(name, len(owner) + owner.count("\t") * size)
    elif name == "replace" and len(given) >= 2:
        _replaced(name, owner, *given[:3])
    elif name == "join" and args:
        items = list(args[0])
        _joined(name, items, owner)
        return (items, *args[1:])
    elif name == "format":
        _refuse_built(name, _format_size(owner, args, kwargs))
    elif name == "format_map" and given and isinstance(given[0], dict):
        _refuse_built(name, _format_size(owner, (), given[0]))
    elif name == "translate" and given and isinstance(given[0], dict):
        longest = max((size_of(value) for value in given[0].values()), default=1)
        _refuse_built(name, len(owner) * longest)
    return args


@pass_context
def _tick(context: Context, literal_chars: int) -> None:
    """At each loop iteration and macro call: its literal text counts as output, and the deadline is checked."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick(literal_chars)


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    """`a ~ b`, as Jinja joins it, once the result is known to be within bounds."""
    _refuse_built("'~'", sum(size_of(part) for part in parts))
    return markup_join(parts) if context.eval_ctx.autoescape else str_join(parts)


@pass_context
def finalize(context: Context, value: Any) -> Any:
    """Every `{{ ... }}` goes out through here: its size counts towards the render's output. A JSON null shows as
    nothing, never as "None"."""
    if value is None:
        return ""
    budget = _BUDGET.get()
    if budget is not None:
        # Strings and numbers first, without size_of's walk or a call: they are most of what a template outputs.
        kind = type(value)
        if kind is str or kind is Markup:
            budget.output += len(value)
        elif kind is int:
            budget.output += value.bit_length() // 3 + 2
        elif kind is float:
            budget.output += 24
        else:
            budget.output += size_of(value)
        if budget.output > MAX_OUTPUT:
            budget.charge(0)  # refuses, naming the bound
    return value


_TICK, _CONCAT = "tripmail_tick", "tripmail_concat"


def _literal_chars(body: list[nodes.Node]) -> int:
    """The literal text a body outputs each time it runs, outside the loops and macros that count their own."""
    total = 0
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.For):
            stack.extend(node.else_)
        elif not isinstance(node, nodes.Macro | nodes.CallBlock):
            stack.extend(node.iter_child_nodes())
    return total


class _Instrument(NodeTransformer):
    """Each loop body and macro body starts with a tick; `~` goes through `_concat`."""

    def _ticked(self, node: nodes.For | nodes.Macro | nodes.CallBlock) -> nodes.Node:
        self.generic_visit(node)
        tick = nodes.Filter(nodes.Const(_literal_chars(node.body)), _TICK, [], [], None, None, lineno=node.lineno)
        node.body.insert(0, nodes.ExprStmt(tick, lineno=node.lineno))
        return node

    visit_For = visit_Macro = visit_CallBlock = _ticked  # noqa: N815 - the names Jinja's visitor calls

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802 - the name Jinja's visitor calls
        self.generic_visit(node)
        parts = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(parts, _CONCAT, [], [], None, None, lineno=node.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Immutable as well: a template must not change the event's data, which the event's other messages render."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options, finalize=finalize)
        for name, filter_function in list(self.filters.items()):
            self.add_filter(name, filter_function, reads_text=name in _TEXT_FILTERS)
        self.filters["join"] = _join
        self.filters["sum"] = _sum
        self.filters[_TICK] = _tick
        self.filters[_CONCAT] = _concat
        self.globals["lipsum"] = _lipsum

    def add_filter(self, name: str, filter_function: Callable[..., Any], *, reads_text: bool = False) -> None:
        """A filter whose result is checked against the bounds; `reads_text`: its input is checked as text too."""
        self.filters[name] = _bounded_filter(name, filter_function, reads_text=reads_text)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        template = super()._parse(source, name, filename)
        instrumented: nodes.Template = _Instrument().visit(template)
        return instrumented

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _binop(operator, left, right)
        return _check_result(repr(operator), super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        args = _method_check(__obj, args, kwargs)
        called = getattr(__obj, "__wrapped__", __obj)
        result = super().call(__context, __obj, *args, **kwargs)
        what = f"macro {called.name}" if isinstance(called, Macro) else getattr(called, "__name__", "a call")
        return _check_result(what, result, getattr(called, "__self__", None))
