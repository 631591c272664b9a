"""Conditions of automation steps: `data.amount > 100 and "Pro" in data.items`, evaluated without `eval`.

rule-engine parses and evaluates them on its own grammar: comparison (`==`, `!=`, `<`, `>=`, ...), `and`, `or`,
`not`, `in`, string and number literals, `null`, and `data.x`, `data["x"]`, `contact.x`, `event.x`. A key the
event or contact does not have reads as `null`, so `data.coupon == null` asks whether it is missing; comparing
`null` with a number cannot be decided and is an error, which fails the run with the reason rather than guessing
a branch.
"""

import warnings
from functools import lru_cache
from typing import Any

import rule_engine

from tripmail.errors import InvalidConfig

ROOTS = ("data", "contact", "event")

# `data.amount` is the apply file's syntax (SPEC), so dot access on mappings stays on; rule-engine 5 deprecates it
# in favour of `data['amount']` and 6.0 drops it, hence the pin below 6 in pyproject.toml.
warnings.filterwarnings("ignore", category=rule_engine.errors.MappingAttributeLookupDeprecation)

_CONTEXT = rule_engine.Context(
    type_resolver=rule_engine.type_resolver_from_dict(dict.fromkeys(ROOTS, rule_engine.DataType.MAPPING)),
    default_value=None,
    mapping_attribute_lookup=True,
)


class ConditionError(Exception):
    """A condition that cannot be decided for this event and contact."""


@lru_cache(maxsize=1024)
def _compile(expression: str) -> rule_engine.Rule:
    return rule_engine.Rule(expression, context=_CONTEXT)


def check_condition(expression: str, *, name: str) -> None:
    """Raise InvalidConfig naming the step when the expression does not parse or reads an unknown name."""
    try:
        _compile(expression)
    except rule_engine.RuleSyntaxError as exc:
        raise InvalidConfig(f"{name}: {expression!r} is not a valid condition ({exc.message})") from exc
    except rule_engine.SymbolResolutionError as exc:
        raise InvalidConfig(
            f"{name}: {expression!r} reads {exc.symbol_name!r}; a condition reads {', '.join(ROOTS)}"
        ) from exc
    except rule_engine.EngineError as exc:
        raise InvalidConfig(f"{name}: {expression!r}: {exc.message}") from exc


def evaluate(expression: str, *, data: dict[str, Any], contact: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether the condition holds; ConditionError when it cannot be decided (e.g. `null > 1`)."""
    try:
        return bool(_compile(expression).matches({"data": data, "contact": contact, "event": event}))
    except rule_engine.EngineError as exc:
        raise ConditionError(f"condition {expression!r}: {exc.message}") from exc
