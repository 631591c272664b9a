"""The filters a translated template calls as it renders: Velocity's comparisons, arithmetic, `.size()`, `#set`
and loop counters, where Jinja's own would differ."""

import re
from collections.abc import Callable
from typing import Any

from jinja2 import Undefined
from jinja2.runtime import LoopContext

from tripmail.rendering.sandbox import MAX_NUMBER_BITS, TemplateLimitExceeded


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
    """`left <operator> right` as tripmail/rendering/velocity/__init__.py says Velocity compares."""
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
