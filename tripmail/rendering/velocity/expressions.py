"""The `( ... )` of an #if, #elseif or #set, read as one Jinja expression."""

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tripmail.errors import InvalidConfig
from tripmail.rendering.velocity.syntax import CLOSE, REFERENCE

if TYPE_CHECKING:
    from tripmail.rendering.velocity.translation import Translation

_MAX_OPERATORS = 24
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


def quote(text: str) -> str:
    """`text` as a Jinja string literal."""
    # Jinja reads a string's escapes as Python does; non-ASCII is left as it is, for Jinja to escape and read back.
    return json.dumps(text, ensure_ascii=False)


class Expression:
    """One `( ... )` of an #if, #elseif or #set, read from just after its `(` up to its own `)`."""

    def __init__(self, translation: "Translation", position: int) -> None:
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
        close = CLOSE.match(self.translation.source, self.position)
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
            reference = REFERENCE.match(source, self.position)
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
            return quote(text)
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
            close = CLOSE.match(source, self.position)
            if close is None:
                raise self.fail("expected ) here")
            self.position = close.end()
            return inner
        raise self.fail("expected a reference, 'text', a number, true or false")
