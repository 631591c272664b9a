"""The Velocity subset esputnik's templates use (its trigger document and template guide), translated to Jinja once, at
apply time, so that it renders in the same bounded sandbox as every other template.

Supported: references `$name`, `$!name`, `${name}`, `$!{name}` with `.get('key')`, `.get(0)` and `.property`
chains, ending in `.size()` if need be; `#foreach($item in <reference>) ... #end` with its counter `$velocityCount`
(and `$foreach.count`, `.index`, `.hasNext`, `.first`, `.last`) and `#break`; `#if(...)`, `#elseif(...)`, `#else`,
`#end`; `#set($name = ...)`; `## comments` and `#* comments *#`. Conditions and `#set` take references, 'text',
numbers, true, false and parentheses, with `==` `!=` `>` `<` `>=` `<=` (or `eq` `ne` `gt` `lt` `ge` `le`), `&&`
`||` `!` (or `and` `or` `not`) and `+` `-` `*` `/` `%`. A directive alone in an HTML comment (`<!-- #if($x) -->`,
as esputnik's editor keeps them) is that directive, and the comment is not shown.

As in Velocity: a quiet reference (`$!`) with no value renders empty and a plain one renders as written; `#end`
outside a block is plain text; a line holding only a directive leaves no line behind; names are case-sensitive
and start with a letter; `#set` changes the name for the rest of the render, loops included; `==` compares two
numbers as numbers and anything else as text (`341 == '341'`); an `#if` is false on a missing, false, empty or
zero value. Data arrives from JSON, where numbers are often text: `<`, `>`, `<=`, `>=` read text that is a
number as that number, and are false for anything else that is not a number. Arithmetic takes numbers only and
is nothing otherwise, except that `+` with text on either side joins both as text.
Any other directive, method or value is refused with its line, rather than rendered wrong.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Undefined
from jinja2.runtime import LoopContext

from tripmail.errors import InvalidConfig
from tripmail.rendering.sandbox import MAX_NUMBER_BITS, TemplateLimitExceeded

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_SIZE = r"\.size\(\s*\)"
_STEP = r"""\.get\(\s*(?:'[^'\\]*'|"[^"\\]*"|\d+)\s*\)|\.(?!size\(\s*\))[A-Za-z_][A-Za-z0-9_]*"""
_REFERENCE = re.compile(
    rf"\$!?(?:\{{(?P<formal>{_NAME}(?:{_STEP})*(?:{_SIZE})?)\}}|(?P<informal>{_NAME}(?:{_STEP})*(?:{_SIZE})?))"
)
_FOREACH = re.compile(rf"#\{{?foreach\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})\}}?\s+in\s+")
_IF = re.compile(r"#\{?(?P<word>if|elseif)\}?\s*\(")
_ELSE = re.compile(r"#(?:\{else\}|else(?![A-Za-z0-9_]))")
_SET = re.compile(rf"#\{{?set\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})\}}?\s*=")
_SET_NAMES = re.compile(rf"#\{{?set\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})")
_CLOSE = re.compile(r"\s*\)")
_END = re.compile(r"#(?:\{end\}|end(?![A-Za-z0-9_]))")
_BREAK = re.compile(r"#(?:\{break\}|break(?![A-Za-z0-9_(]))")
_LINE_COMMENT = re.compile(r"##[^\r\n]*(?:\r?\n)?")
_BLOCK_COMMENT = re.compile(r"#\*.*?\*#", re.DOTALL)
_OTHER_DIRECTIVE = re.compile(
    r"#\{?(?P<word>if|elseif|else|set|foreach|macro|parse|include|define|evaluate|break|stop)\b"
)
_COMMENT_OPEN = re.compile(r"<!--[ \t]*(?=#)")
_COMMENT_CLOSE = re.compile(r"[ \t]*-->")
_GET = re.compile(r"""\.get\(\s*(?:'(?P<single>[^'\\]*)'|"(?P<double>[^"\\]*)"|(?P<index>\d+))\s*\)""")
# A `{` that ends a piece of text would open a delimiter with the `{{` of the reference after it.
_JINJA_DELIMITERS = re.compile(r"\{[{%#]|[}%#]\}|\{\Z")
# Names Jinja reads as its own (a literal, an operator, the template itself), never as the data's: `$self` would
# show Jinja's template object and `$true` Python's True.
_JINJA_NAMES = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "self", "loop"}
    | {"caller", "varargs", "kwargs"}
)
# Where the template's `#set` values live: a name Velocity cannot write, since its names start with a letter.
_LOCALS = "_velocity_set"
# `$foreach.<name>` as Jinja's loop tells it.
_FOREACH_PROPERTIES = {"count": "index", "index": "index0", "hasNext": "has_next", "first": "first", "last": "last"}
# How each supported directive is written, for one that is not.
_FORMS = {
    "foreach": "#foreach($item in $reference)",
    "if": "#if(condition)",
    "elseif": "#elseif(condition)",
    "set": "#set($name = value)",
}
_MAX_OPERATORS = 24
_MAX_BLOCKS = 32
_WORD_OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "lt": "<", "ge": ">=", "le": "<=", "and": "&&", "or": "||"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'[^']*'|"[^"]*")
        |(?P<number>\d+(?:\.\d+)?(?![A-Za-z0-9_.]))
        |(?P<operator>==|!=|>=|<=|&&|\|\||[<>!()+\-*/%])
        |(?P<word>[A-Za-z]+)(?![A-Za-z0-9_])
    )""",
    re.VERBOSE,
)


def _line(source: str, position: int) -> int:
    return source.count("\n", 0, position) + 1


def _quote(text: str) -> str:
    # Jinja reads a string's escapes as Python does; non-ASCII is left as it is, for Jinja to escape and read back.
    return json.dumps(text, ensure_ascii=False)


def _literal(text: str) -> str:
    """Plain text, protected from being read as Jinja: each delimiter is printed as a string.

    Not a `{% raw %}` block, which the text could end with its own `{% endraw %}` and go on in Jinja."""
    return _JINJA_DELIMITERS.sub(lambda delimiter: '{{ "' + delimiter[0] + '" }}', text)


@dataclass
class _Block:
    kind: str  # "if" or "foreach"
    variable: str | None = None


@dataclass
class _Translation:
    source: str
    name: str
    set_names: frozenset[str]
    blocks: list[_Block] = field(default_factory=list)

    def fail(self, position: int, message: str) -> InvalidConfig:
        return InvalidConfig(f"{self.name}: line {_line(self.source, position)}: {message}")

    @property
    def loop_variables(self) -> set[str]:
        return {block.variable for block in self.blocks if block.variable is not None}

    def in_loop(self) -> bool:
        return any(block.kind == "foreach" for block in self.blocks)

    def expression(self, chain: str, position: int) -> str:
        """`data.get('array').get(0).name` as the Jinja expression `data["array"][0].name`."""
        head, _, rest = chain.partition(".")
        rest = "." + rest if rest else ""
        size = re.search(rf"{_SIZE}\Z", rest)
        if size:
            rest = rest[: size.start()]
        expression, rest = self.head(head, rest, position)
        while rest:
            get = _GET.match(rest)
            if get:
                key = get["index"] if get["index"] is not None else _quote(get["single"] or get["double"] or "")
                expression += f"[{key}]"
                rest = rest[get.end() :]
                continue
            prop = re.match(r"\.([A-Za-z_][A-Za-z0-9_]*)", rest)
            assert prop is not None, rest
            expression += "." + prop[1]
            rest = rest[prop.end() :]
        return f"({expression} | velocity_size)" if size else expression

    def head(self, head: str, rest: str, position: int) -> tuple[str, str]:
        """The Jinja for the reference's first name, and what of the chain is left to read."""
        if head in self.loop_variables:
            return head, rest
        if self.in_loop() and head == "velocityCount":
            return '(loop | velocity_loop("index"))', rest
        if self.in_loop() and head == "foreach":
            prop = re.match(r"\.([A-Za-z]+)", rest)
            if prop is None or prop[1] not in _FOREACH_PROPERTIES:
                known = ", ".join(f"$foreach.{known}" for known in _FOREACH_PROPERTIES)
                raise self.fail(position, f"$foreach{rest} is not one of {known}")
            return f'(loop | velocity_loop("{_FOREACH_PROPERTIES[prop[1]]}"))', rest[prop.end() :]
        if head in _JINJA_NAMES:
            raise self.fail(position, f"${head} is a name this template language keeps for itself; rename the param")
        if head in self.set_names:
            return f"{_LOCALS}.{head}", rest
        return head, rest


def to_jinja(source: str, *, name: str) -> str:
    """The template in Jinja; InvalidConfig names the line of anything outside the subset."""
    set_names = frozenset(match["var"] for match in _SET_NAMES.finditer(source))
    translation = _Translation(source, name, set_names)
    out: list[str] = []
    position = 0
    literal_start = 0
    while position < len(source):
        character = source[position]
        start = position
        directive = False
        if (comment := _LINE_COMMENT.match(source, position)) is not None:
            # A line comment takes its line's end with it, wherever on the line it starts.
            length, translated = comment.end() - position, ""
        elif character == "#":
            length, translated = _directive(translation, position)
            directive = bool(length)
        elif character == "$":
            length, translated = _reference(translation, position)
        elif character == "<" and (comment := _COMMENT_OPEN.match(source, position)):
            length, translated = _commented_directive(translation, position, comment.end())
            directive = bool(length)
        else:
            position += 1
            continue
        if not length:
            position += 1
            continue
        end = position + length
        if directive:
            start, end = _gobbled_line(source, start, end, literal_start)
        out.append(_literal(source[literal_start:start]))
        out.append(translated)
        position = literal_start = end
    out.append(_literal(source[literal_start:]))
    if translation.blocks:
        raise InvalidConfig(f"{name}: a #{translation.blocks[-1].kind} has no #end")
    if set_names:
        # Each #set name starts as the data's value of that name, as Velocity's context holds both.
        start_values = ", ".join(f"{_quote(set_name)}: {set_name}" for set_name in sorted(set_names))
        out.insert(0, f"{{% set {_LOCALS} = {{{start_values}}} %}}")
    return "".join(out)


def _gobbled_line(source: str, start: int, end: int, literal_start: int) -> tuple[int, int]:
    """A directive alone on its line takes the line with it, as Velocity's `space.gobbling = lines` does."""
    line_start = source.rfind("\n", 0, start) + 1
    if line_start < literal_start or source[line_start:start].strip(" \t"):
        return start, end
    after = re.match(r"[ \t]*(?:\r?\n|\Z)", source[end:])
    if after is None:
        return start, end
    return line_start, end + after.end()


def _commented_directive(translation: _Translation, position: int, directive_at: int) -> tuple[int, str]:
    """`<!-- #if($x) -->` as `#if($x)`; a comment with anything else in it stays text around its directive."""
    blocks = list(translation.blocks)
    length, translated = _directive(translation, directive_at)
    close = _COMMENT_CLOSE.match(translation.source, directive_at + length) if length else None
    if close is None:
        translation.blocks[:] = blocks
        return 0, ""
    return close.end() - position, translated


def _directive(translation: _Translation, position: int) -> tuple[int, str]:
    """The directive at `position`: its length and its Jinja; (0, "") when it is text."""
    source, blocks = translation.source, translation.blocks
    if source.startswith("#*", position):
        comment = _BLOCK_COMMENT.match(source, position)
        if comment is None:
            raise translation.fail(position, "a #* comment has no *#")
        return comment.end() - position, ""
    foreach = _FOREACH.match(source, position)
    if foreach:
        return _foreach(translation, position, foreach)
    condition = _IF.match(source, position)
    if condition:
        expression, stop = _Expression(translation, condition.end()).condition()
        if condition["word"] == "if":
            _open(translation, position, _Block("if"))
            return stop - position, f"{{% if {expression} %}}"
        if not blocks or blocks[-1].kind != "if":
            raise translation.fail(position, "#elseif outside an #if")
        return stop - position, f"{{% elif {expression} %}}"
    otherwise = _ELSE.match(source, position)
    if otherwise:
        if not blocks or blocks[-1].kind != "if":
            raise translation.fail(position, "#else outside an #if")
        return otherwise.end() - position, "{% else %}"
    assignment = _SET.match(source, position)
    if assignment:
        variable = assignment["var"]
        if variable in translation.loop_variables or variable in ("velocityCount", "foreach"):
            raise translation.fail(position, f"#set cannot change the loop's own ${variable}")
        if variable in _JINJA_NAMES:
            raise translation.fail(position, f"${variable} is a name this template language keeps for itself")
        expression, stop = _Expression(translation, assignment.end()).condition()
        return stop - position, f'{{{{ {_LOCALS} | velocity_set("{variable}", {expression}) }}}}'
    end = _END.match(source, position)
    if end and blocks:
        block = blocks.pop()
        return end.end() - position, "{% endif %}" if block.kind == "if" else "{% endfor %}"
    if loop_break := _BREAK.match(source, position):
        if not translation.in_loop():
            raise translation.fail(position, "#break outside a #foreach")
        return loop_break.end() - position, "{% break %}"
    other = _OTHER_DIRECTIVE.match(source, position)
    if other and other["word"] in _FORMS:
        raise translation.fail(position, f"write this as {_FORMS[other['word']]}")
    if other:
        raise translation.fail(
            position,
            f"#{other['word']} is outside the supported Velocity subset (references with .get() and .size(), "
            "#foreach, #if/#elseif/#else, #set); write this template in Jinja",
        )
    return 0, ""


def _open(translation: _Translation, position: int, block: _Block) -> None:
    # Jinja compiles each block inside the one around it, and runs out of indentation levels past about 100.
    if len(translation.blocks) >= _MAX_BLOCKS:
        raise translation.fail(position, f"#if and #foreach nested more than {_MAX_BLOCKS} deep")
    translation.blocks.append(block)


def _foreach(translation: _Translation, position: int, foreach: re.Match[str]) -> tuple[int, str]:
    source = translation.source
    loop_source = _REFERENCE.match(source, foreach.end())
    close = _CLOSE.match(source, loop_source.end()) if loop_source else None
    if loop_source is None or close is None:
        raise translation.fail(position, "write loops as #foreach($item in $reference)")
    variable = foreach["var"]
    if variable in translation.set_names or variable in _JINJA_NAMES or variable in ("velocityCount", "foreach"):
        raise translation.fail(position, f"${variable} cannot name a loop's item: it is #set or kept; rename it")
    expression = translation.expression(loop_source["formal"] or loop_source["informal"], position)
    _open(translation, position, _Block("foreach", variable))
    return close.end() - position, f"{{% for {variable} in {expression} %}}"


def _reference(translation: _Translation, position: int) -> tuple[int, str]:
    source = translation.source
    reference = _REFERENCE.match(source, position)
    if reference is None:
        if source.startswith(("$!{", "${"), position) or re.match(r"\$!?[A-Za-z]", source[position:]):
            raise translation.fail(position, "cannot read the reference here")
        return 0, ""
    if source[reference.end() : reference.end() + 1] == "(":
        raise translation.fail(
            position,
            f"method call {source[position : reference.end() + 1]}...) is outside the supported Velocity subset "
            "(only .get(key), .get(index) and .size())",
        )
    expression = translation.expression(reference["formal"] or reference["informal"], position)
    if source.startswith("$!", position):
        return reference.end() - position, "{{ " + expression + " }}"
    written = _quote(source[position : reference.end()])
    return reference.end() - position, "{{ " + expression + " | or_written(" + written + ") }}"


class _Expression:
    """One `( ... )` of an #if, #elseif or #set, read from just after its `(` up to its own `)`."""

    def __init__(self, translation: _Translation, position: int) -> None:
        self.translation = translation
        self.position = position
        self.start = position
        self.operators = 0

    def count(self) -> None:
        """One more operator or `(`; Jinja nests each in the next when it compiles, and runs out of stack past
        about 40, so an expression is refused past `_MAX_OPERATORS` before it reaches Jinja."""
        self.operators += 1
        if self.operators > _MAX_OPERATORS:
            raise self.fail(f"more than {_MAX_OPERATORS} operators and parentheses")

    def nested(self, read: Callable[[], str]) -> str:
        self.count()
        return read()

    def condition(self) -> tuple[str, int]:
        """The Jinja expression and where the closing `)` ends."""
        expression = self.or_expression()
        close = _CLOSE.match(self.translation.source, self.position)
        if close is None:
            raise self.fail("expected ) here")
        return expression, close.end()

    def fail(self, message: str) -> InvalidConfig:
        source = self.translation.source
        near = source[self.position : self.position + 20].split("\n")[0].strip() or "the end"
        return self.translation.fail(self.start, f"{message} (at {near!r}) in a condition or #set")

    def peek(self) -> str | None:
        """The next operator or word, as its symbol (`gt` is `>`), or None."""
        token = _TOKEN.match(self.translation.source, self.position)
        if token is None or token["string"] or token["number"]:
            return None
        text = token["operator"] or token["word"]
        return _WORD_OPERATORS.get(text, text)

    def take(self) -> None:
        token = _TOKEN.match(self.translation.source, self.position)
        assert token is not None
        self.position = token.end()
        self.count()

    def or_expression(self) -> str:
        expression = self.and_expression()
        while self.peek() == "||":
            self.take()
            expression = f"(true if ({expression}) or ({self.and_expression()}) else false)"
        return expression

    def and_expression(self) -> str:
        expression = self.not_expression()
        while self.peek() == "&&":
            self.take()
            expression = f"(true if ({expression}) and ({self.not_expression()}) else false)"
        return expression

    def not_expression(self) -> str:
        if self.peek() in ("!", "not"):
            self.take()
            return f"(not ({self.not_expression()}))"
        return self.comparison()

    def comparison(self) -> str:
        left = self.sum()
        operator = self.peek()
        if operator in ("==", "!=", ">", "<", ">=", "<="):
            self.take()
            return f'(({left}) | velocity_compare("{operator}", {self.sum()}))'
        return left

    def sum(self) -> str:
        expression = self.product()
        while (operator := self.peek()) in ("+", "-"):
            self.take()
            expression = f'(({expression}) | velocity_math("{operator}", {self.product()}))'
        return expression

    def product(self) -> str:
        expression = self.operand()
        while (operator := self.peek()) in ("*", "/", "%"):
            self.take()
            expression = f'(({expression}) | velocity_math("{operator}", {self.operand()}))'
        return expression

    def operand(self) -> str:
        source = self.translation.source
        whitespace = re.compile(r"\s*").match(source, self.position)
        assert whitespace is not None
        self.position = whitespace.end()
        if source.startswith("$", self.position):
            reference = _REFERENCE.match(source, self.position)
            if reference is None or source.startswith("(", reference.end()):
                raise self.fail("only references with .get(), .size() and properties are read")
            self.position = reference.end()
            return self.translation.expression(reference["formal"] or reference["informal"], self.start)
        token = _TOKEN.match(source, self.position)
        if token is None:
            raise self.fail("expected a reference, 'text', a number, true or false")
        if token["string"]:
            text = token["string"][1:-1]
            if token["string"].startswith('"') and re.search(r"[$#]", text):
                raise self.fail("a \"string\" with $ or # in it is outside the subset; use 'single quotes'")
            self.position = token.end()
            return _quote(text)
        if token["number"]:
            self.position = token.end()
            return token["number"]
        if token["word"] in ("true", "false"):
            self.position = token.end()
            return token["word"]
        if token["operator"] == "-":
            self.position = token.end()
            return f'(0 | velocity_math("-", {self.nested(self.operand)}))'
        if token["operator"] == "(":
            self.position = token.end()
            inner = self.nested(self.or_expression)
            close = _CLOSE.match(source, self.position)
            if close is None:
                raise self.fail("expected ) here")
            self.position = close.end()
            return inner
        raise self.fail("expected a reference, 'text', a number, true or false")


def _present(value: Any) -> Any:
    return None if isinstance(value, Undefined) else value


def _number(value: Any) -> int | float | None:
    """The number `value` is or reads as (JSON data often carries numbers as text), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", value):
        return int(value) if re.fullmatch(r"\s*-?\d+\s*", value) else float(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    """`value` as Velocity (Java) prints it, for `==` between values of different kinds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compare(left: Any, operator: str, right: Any) -> bool:
    left, right = _present(left), _present(right)
    if operator in ("==", "!="):
        if left is None or right is None:
            equal = left is None and right is None
        elif (
            _number(left) is not None
            and _number(right) is not None
            and not (isinstance(left, str) and isinstance(right, str))
        ):
            equal = _number(left) == _number(right)
        elif type(left) is type(right):
            equal = left == right
        else:
            equal = _text(left) == _text(right)
        return equal if operator == "==" else not equal
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return False
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[operator]


def velocity_compare(left: Any, operator: str, right: Any) -> bool:
    """`left <operator> right` as the module docstring says Velocity compares."""
    return _compare(left, operator, right)


def velocity_math(left: Any, operator: str, right: Any) -> int | float | str | None:
    """Velocity's arithmetic: `+` with text on either side joins the two as text; otherwise numbers only (whole
    numbers stay whole, division truncates), and anything else, or a division by zero, is nothing."""
    left, right = _present(left), _present(right)
    if operator == "+" and left is not None and right is not None and (isinstance(left, str) or isinstance(right, str)):
        return _text(left) + _text(right)
    if not (_is_number(left) and _is_number(right)) or (operator in ("/", "%") and right == 0):
        return None
    a, b = left, right
    result: int | float
    if operator == "+":
        result = a + b
    elif operator == "-":
        result = a - b
    elif operator == "*":
        result = a * b
    elif isinstance(a, int) and isinstance(b, int):
        # Java's integer division and remainder round towards zero, Python's towards minus infinity.
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        result = quotient if operator == "/" else a - b * quotient
    else:
        result = a / b if operator == "/" else a - b * int(a / b)
    if isinstance(result, int) and result.bit_length() > MAX_NUMBER_BITS:
        raise TemplateLimitExceeded(f"#set arithmetic gave a number past {MAX_NUMBER_BITS:,} bits")
    return result


def velocity_size(value: Any) -> int | None:
    """`.size()` of a list or a map; nothing for anything else, as Velocity finds no such method on it."""
    return len(value) if isinstance(value, list | dict) else None


def velocity_set(locals_: dict[str, Any], name: str, value: Any) -> str:
    """`#set($name = value)`: the name has the value for the rest of the render; it outputs nothing."""
    locals_[name] = _present(value)
    return ""


def velocity_loop(loop: LoopContext, counter: str) -> int | bool:
    """The loop's counter, read here since a template reads only the data's own keys."""
    return not loop.last if counter == "has_next" else getattr(loop, counter)


FILTERS: dict[str, Callable[..., Any]] = {
    "velocity_loop": velocity_loop,
    "velocity_compare": velocity_compare,
    "velocity_math": velocity_math,
    "velocity_size": velocity_size,
    "velocity_set": velocity_set,
}
