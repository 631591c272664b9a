"""The Velocity subset esputnik's templates use (seed 002), translated to Jinja once, at apply time.

Supported: references `$name`, `$!name`, `${name}`, `$!{name}` with `.get('key')`, `.get(0)` and `.property`
chains, and `#foreach($item in <reference>) ... #end`. As in Velocity, a quiet reference (`$!`) with no value
renders empty and a plain one renders as written, and `#end` outside a loop is plain text. Names are
case-sensitive. Any other directive or method is refused with its line, rather than rendered wrong.
"""

import json
import re

from tripmail.errors import InvalidConfig

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = r"""\.get\(\s*(?:'[^'\\]*'|"[^"\\]*"|\d+)\s*\)|\.[A-Za-z_][A-Za-z0-9_]*"""
_REFERENCE = re.compile(rf"\$!?(?:\{{(?P<formal>{_NAME}(?:{_STEP})*)\}}|(?P<informal>{_NAME}(?:{_STEP})*))")
_FOREACH = re.compile(rf"#\{{?foreach\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})\}}?\s+in\s+")
_CLOSE = re.compile(r"\s*\)")
_END = re.compile(r"#\{?end\}?")
_OTHER_DIRECTIVE = re.compile(r"#\{?(?P<word>if|elseif|else|set|macro|parse|include|define|evaluate|break|stop)\b")
_GET = re.compile(r"""\.get\(\s*(?:'(?P<single>[^'\\]*)'|"(?P<double>[^"\\]*)"|(?P<index>\d+))\s*\)""")
# A `{` that ends a piece of text would open a delimiter with the `{{` of the reference after it.
_JINJA_DELIMITERS = re.compile(r"\{[{%#]|[}%#]\}|\{\Z")


def _line(source: str, position: int) -> int:
    return source.count("\n", 0, position) + 1


def _expression(chain: str) -> str:
    """`data.get('array').get(0).name` as the Jinja expression `data["array"][0].name`."""
    name, _, rest = chain.partition(".")
    expression = name
    rest = "." + rest if rest else ""
    while rest:
        get = _GET.match(rest)
        if get:
            key = get["index"] if get["index"] is not None else json.dumps(get["single"] or get["double"] or "")
            expression += f"[{key}]"
            rest = rest[get.end() :]
            continue
        prop = re.match(rf"\.({_NAME})", rest)
        assert prop is not None, rest
        expression += "." + prop[1]
        rest = rest[prop.end() :]
    return expression


def _literal(text: str) -> str:
    """Plain text, protected from being read as Jinja: each delimiter is printed as a string.

    Not a `{% raw %}` block, which the text could end with its own `{% endraw %}` and go on in Jinja."""
    return _JINJA_DELIMITERS.sub(lambda delimiter: '{{ "' + delimiter[0] + '" }}', text)


def to_jinja(source: str, *, name: str) -> str:
    """The template in Jinja; InvalidConfig names the line of anything outside the subset."""
    out: list[str] = []
    open_loops = 0
    position = 0
    literal_start = 0
    while position < len(source):
        character = source[position]
        if character == "#":
            token, translated, open_loops = _directive(source, position, open_loops, name)
        elif character == "$":
            token, translated = _reference(source, position, name)
        else:
            position += 1
            continue
        if token:
            out.append(_literal(source[literal_start:position]))
            out.append(translated)
            position += token
            literal_start = position
        else:
            position += 1
    out.append(_literal(source[literal_start:]))
    if open_loops:
        raise InvalidConfig(f"{name}: a #foreach has no #end")
    return "".join(out)


def _directive(source: str, position: int, open_loops: int, name: str) -> tuple[int, str, int]:
    foreach = _FOREACH.match(source, position)
    if foreach:
        loop_source = _REFERENCE.match(source, foreach.end())
        close = _CLOSE.match(source, loop_source.end()) if loop_source else None
        if loop_source is None or close is None:
            raise InvalidConfig(f"{name}: line {_line(source, position)}: write loops as #foreach($item in $reference)")
        expression = _expression(loop_source["formal"] or loop_source["informal"])
        return close.end() - position, f"{{% for {foreach['var']} in {expression} %}}", open_loops + 1
    end = _END.match(source, position)
    if end and open_loops and not re.match(r"[A-Za-z0-9_]", source[end.end() : end.end() + 1]):
        return end.end() - position, "{% endfor %}", open_loops - 1
    other = _OTHER_DIRECTIVE.match(source, position)
    if other:
        raise InvalidConfig(
            f"{name}: line {_line(source, position)}: #{other['word']} is outside the supported Velocity subset "
            "(references with .get(), #foreach ... #end); write this template in Jinja"
        )
    return 0, "", open_loops


def _reference(source: str, position: int, name: str) -> tuple[int, str]:
    reference = _REFERENCE.match(source, position)
    if reference is None:
        if source.startswith(("$!{", "${"), position) or re.match(r"\$!?[A-Za-z_]", source[position:]):
            raise InvalidConfig(f"{name}: line {_line(source, position)}: cannot read the reference here")
        return 0, ""
    if source[reference.end() : reference.end() + 1] == "(":
        raise InvalidConfig(
            f"{name}: line {_line(source, position)}: method call {source[position : reference.end() + 1]}...) is "
            "outside the supported Velocity subset (only .get(key) and .get(index))"
        )
    expression = _expression(reference["formal"] or reference["informal"])
    if source.startswith("$!", position):
        return reference.end() - position, "{{ " + expression + " }}"
    written = json.dumps(source[position : reference.end()])
    return reference.end() - position, "{{ " + expression + " | or_written(" + written + ") }}"
