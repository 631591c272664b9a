"""A Velocity template as Jinja: text, directives and references read in order, with the blocks they open."""

import re
from dataclasses import dataclass, field

from tripmail.errors import InvalidConfig
from tripmail.rendering.velocity.expressions import Expression, quote
from tripmail.rendering.velocity.syntax import (
    BLOCK_COMMENT,
    BREAK,
    CLOSE,
    COMMENT_CLOSE,
    COMMENT_OPEN,
    ELSE,
    END,
    FOREACH,
    FORMS,
    GET,
    IF,
    LINE_COMMENT,
    OTHER_DIRECTIVE,
    REFERENCE,
    SET,
    SET_NAMES,
    SIZE,
)

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
_MAX_BLOCKS = 32


def _line(source: str, position: int) -> int:
    return source.count("\n", 0, position) + 1


def _literal(text: str) -> str:
    """Plain text, protected from being read as Jinja: each delimiter is printed as a string.

    Not a `{% raw %}` block, which the text could end with its own `{% endraw %}` and go on in Jinja."""
    return _JINJA_DELIMITERS.sub(lambda delimiter: '{{ "' + delimiter[0] + '" }}', text)


@dataclass
class _Block:
    kind: str  # "if" or "foreach"
    variable: str | None = None


@dataclass
class Translation:
    """One template's translation under way: its source, the names it #sets, and the blocks open so far."""

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
        size = re.search(rf"{SIZE}\Z", rest)
        if size:
            rest = rest[: size.start()]
        expression, rest = self.head(head, rest, position)
        while rest:
            get = GET.match(rest)
            if get:
                key = get["index"] if get["index"] is not None else quote(get["single"] or get["double"] or "")
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
    set_names = frozenset(match["var"] for match in SET_NAMES.finditer(source))
    translation = Translation(source, name, set_names)
    out: list[str] = []
    position = 0
    literal_start = 0
    while position < len(source):
        character = source[position]
        start = position
        directive = False
        if (comment := LINE_COMMENT.match(source, position)) is not None:
            # A line comment takes its line's end with it, wherever on the line it starts.
            length, translated = comment.end() - position, ""
        elif character == "#":
            length, translated = _directive(translation, position)
            directive = bool(length)
        elif character == "$":
            length, translated = _reference(translation, position)
        elif character == "<" and (comment := COMMENT_OPEN.match(source, position)):
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
        start_values = ", ".join(f"{quote(set_name)}: {set_name}" for set_name in sorted(set_names))
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


def _commented_directive(translation: Translation, position: int, directive_at: int) -> tuple[int, str]:
    """`<!-- #if($x) -->` as `#if($x)`; a comment with anything else in it stays text around its directive."""
    blocks = list(translation.blocks)
    length, translated = _directive(translation, directive_at)
    close = COMMENT_CLOSE.match(translation.source, directive_at + length) if length else None
    if close is None:
        translation.blocks[:] = blocks
        return 0, ""
    return close.end() - position, translated


def _directive(translation: Translation, position: int) -> tuple[int, str]:
    """The directive at `position`: its length and its Jinja; (0, "") when it is text."""
    source, blocks = translation.source, translation.blocks
    if source.startswith("#*", position):
        comment = BLOCK_COMMENT.match(source, position)
        if comment is None:
            raise translation.fail(position, "a #* comment has no *#")
        return comment.end() - position, ""
    foreach = FOREACH.match(source, position)
    if foreach:
        return _foreach(translation, position, foreach)
    condition = IF.match(source, position)
    if condition:
        expression, stop = Expression(translation, condition.end()).condition()
        if condition["word"] == "if":
            _open(translation, position, _Block("if"))
            return stop - position, f"{{% if {expression} %}}"
        if not blocks or blocks[-1].kind != "if":
            raise translation.fail(position, "#elseif outside an #if")
        return stop - position, f"{{% elif {expression} %}}"
    otherwise = ELSE.match(source, position)
    if otherwise:
        if not blocks or blocks[-1].kind != "if":
            raise translation.fail(position, "#else outside an #if")
        return otherwise.end() - position, "{% else %}"
    assignment = SET.match(source, position)
    if assignment:
        variable = assignment["var"]
        if variable in translation.loop_variables or variable in ("velocityCount", "foreach"):
            raise translation.fail(position, f"#set cannot change the loop's own ${variable}")
        if variable in _JINJA_NAMES:
            raise translation.fail(position, f"${variable} is a name this template language keeps for itself")
        expression, stop = Expression(translation, assignment.end()).condition()
        return stop - position, f'{{{{ {_LOCALS} | velocity_set("{variable}", {expression}) }}}}'
    end = END.match(source, position)
    if end and blocks:
        block = blocks.pop()
        return end.end() - position, "{% endif %}" if block.kind == "if" else "{% endfor %}"
    if loop_break := BREAK.match(source, position):
        if not translation.in_loop():
            raise translation.fail(position, "#break outside a #foreach")
        return loop_break.end() - position, "{% break %}"
    other = OTHER_DIRECTIVE.match(source, position)
    if other and other["word"] in FORMS:
        raise translation.fail(position, f"write this as {FORMS[other['word']]}")
    if other:
        raise translation.fail(
            position,
            f"#{other['word']} is outside the supported Velocity subset (references with .get() and .size(), "
            "#foreach, #if/#elseif/#else, #set); write this template in Jinja",
        )
    return 0, ""


def _open(translation: Translation, position: int, block: _Block) -> None:
    # Jinja compiles each block inside the one around it, and runs out of indentation levels past about 100.
    if len(translation.blocks) >= _MAX_BLOCKS:
        raise translation.fail(position, f"#if and #foreach nested more than {_MAX_BLOCKS} deep")
    translation.blocks.append(block)


def _foreach(translation: Translation, position: int, foreach: re.Match[str]) -> tuple[int, str]:
    source = translation.source
    loop_source = REFERENCE.match(source, foreach.end())
    close = CLOSE.match(source, loop_source.end()) if loop_source else None
    if loop_source is None or close is None:
        raise translation.fail(position, "write loops as #foreach($item in $reference)")
    variable = foreach["var"]
    if variable in translation.set_names or variable in _JINJA_NAMES or variable in ("velocityCount", "foreach"):
        raise translation.fail(position, f"${variable} cannot name a loop's item: it is #set or kept; rename it")
    expression = translation.expression(loop_source["formal"] or loop_source["informal"], position)
    _open(translation, position, _Block("foreach", variable))
    return close.end() - position, f"{{% for {variable} in {expression} %}}"


def _reference(translation: Translation, position: int) -> tuple[int, str]:
    source = translation.source
    reference = REFERENCE.match(source, position)
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
    written = quote(source[position : reference.end()])
    return reference.end() - position, "{{ " + expression + " | or_written(" + written + ") }}"
