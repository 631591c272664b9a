"""What a template may build, output and spend (tripmail/rendering/sandbox.py), through render_part as a message
renders."""

import pytest

from tripmail.rendering.templates import RenderError, render_part, template_context

BUILDS = "a template may build at most 1,000,000"
NUMBERS = "a template's numbers have at most 4,096"
OUTPUT = "the rendered text passes 16,777,216 characters"


def context(**data: object) -> dict[str, object]:
    return template_context({"email": "ann@acme.test", "first_name": "Ann"}, dict(data), {"name": "ORDER"})


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("{{ 'a' * 10**9 }}", f"'*' would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ 10 ** 10 ** 10 ** 10 ** 10 }}", f"'**' would give a number of about 33,220 bits; {NUMBERS}"),
        ("{{ 10 ** (10 ** 10) }}", NUMBERS),
        ("{{ [1] * 10**9 }}", f"'*' would build 1,000,000,000 items; {BUILDS}"),
        ("{{ 'a'|string * 10**9 }}", f"'*' would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ 10**9 * 'a' }}", BUILDS),
        ("{{ '%999999999s' % 'a' }}", f"'%' would build 1,000,000,011 characters; {BUILDS}"),
        ("{{ '%*d' % (10**9, 1) }}", f"'%' would build 1,000,000,016 characters; {BUILDS}"),
        ("{{ '%s%s' % ('a' * 600000, 'b') }}", BUILDS),
        ("{{ '%999999999s'|format('a') }}", f"format would build 1,000,000,011 characters; {BUILDS}"),
        ("{{ '{:>999999999}'.format(1) }}", f"format would build 1,000,000,014 characters; {BUILDS}"),
        ("{{ 'a'.ljust(10**9) }}", f"ljust would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ 'a'|center(10**9) }}", f"center would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ ('a' * 1000000).replace('a', 'bb') }}", f"replace would build 2,000,000 characters; {BUILDS}"),
        ("{{ (['a' * 1000000] * 1000)|join }}", f"join would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ ''.join(['a' * 1000000] * 1000) }}", f"join would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ ('a' * 1000000) ~ 'b' }}", f"'~' would build 1,000,001 characters; {BUILDS}"),
        ("{{ ('a' * 1000000) + 'b' }}", f"'+' would build 1,000,001 characters; {BUILDS}"),
        ("{{ ('&' * 300000)|forceescape }}", f"forceescape would build 1,500,000 characters; {BUILDS}"),
        ("{{ 'a'.encode() * 10**9 }}", f"'*' would build 1,000,000,000 characters; {BUILDS}"),
        (
            "{{ ('a' * 1000000).encode().replace('a'.encode(), 'bb'.encode()) }}",
            f"replace would build 2,000,000 characters; {BUILDS}",
        ),
        ("{{ 'a'.encode().ljust(10**9) }}", f"ljust would build 1,000,000,000 characters; {BUILDS}"),
        ("{{ ('a' * 600000).upper() ~ ('a' * 600000).upper() }}", f"'~' would build 1,200,000 characters; {BUILDS}"),
        (
            "{% macro m() %}{{ 'a' * 600000 }}{{ 'a' * 600000 }}{% endmacro %}{{ m() }}",
            f"macro m would build 1,200,000 characters; {BUILDS}",
        ),
        ("{{ ([[1] * 1000000] * 1000)|sum(start=[]) }}", f"sum would build 1,000,000,000 items; {BUILDS}"),
        ("{{ ('a ' * 1000)|urlize(target='x' * 1000000) }}", f"urlize would build 1,000,009,000 characters; {BUILDS}"),
        ("{{ [1]|batch(10**9, 0)|list }}", f"batch would build 1,000,000,000 items; {BUILDS}"),
        ("{{ [1, 2, 3]|slice(10**9)|list }}", f"slice would build 1,000,000,000 items; {BUILDS}"),
        ("{{ ('a' * 1000000)|replace('a', 'bb') }}", f"replace would build 2,000,000 characters; {BUILDS}"),
        ("{{ data.text|indent(10**6) }}", f"indent would build 1,001,005,000 characters; {BUILDS}"),
        ("{{ 'a b c'|wordwrap(1, wrapstring='x' * 500000) }}", f"wordwrap would build 1,500,005 characters; {BUILDS}"),
        ("{{ [[1]]|tojson(indent=10**8) }}", "tojson's indent is 100,000,000; it may be at most 16"),
        ("{{ lipsum(100000) }}", f"lipsum would build 120,000,000 characters; {BUILDS}"),
        # Doubling in a loop is refused at the step that passes the bound, not after it.
        (
            "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            f"'~' would build 1,048,576 characters; {BUILDS}",
        ),
        (
            "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
            f"'*' would give a number of about 6,494 bits; {NUMBERS}",
        ),
        # Small values, many times: the output is counted.
        ("{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}", OUTPUT),
        (
            "{% for i in range(100000) %}{% for j in range(1000) %}" + "literal " * 10 + "{% endfor %}{% endfor %}",
            OUTPUT,
        ),
        ("{{ ['a' * 1000000] * 100 }}", OUTPUT),
    ],
)
def test_growth_past_a_bound_is_refused_naming_the_rule(source: str, rule: str) -> None:
    with pytest.raises(RenderError) as refused:
        # Time enough that only the bound under test can stop the render.
        render_part(source, context(text="line\n" * 1000), html=False, timeout_s=600)
    assert rule in str(refused.value)
    assert refused.value.line == 1


def test_the_sandbox_already_bounds_range() -> None:
    with pytest.raises(RenderError, match=r"MAX_RANGE \(100000\)"):
        render_part("{{ range(10**9)|list|length }}", context(), html=False)


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        # Recursion with no loop: each macro call checks the deadline too.
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    ],
    ids=["loop", "macro"],
)
def test_a_render_that_cannot_finish_fails_at_the_time_bound(source: str) -> None:
    with pytest.raises(RenderError) as refused:
        render_part(source, context(), html=False, timeout_s=0.05)
    assert "rendering took longer than 0.05 s (TRIPMAIL_RENDER_TIMEOUT_S): a loop or macro runs too long" in str(
        refused.value
    )


def test_a_velocity_template_is_bounded_as_its_jinja_is() -> None:
    source = "#foreach($a in $data.get('xs'))#foreach($b in $data.get('xs'))#end#end$!data.get('xs').get(1)"
    with pytest.raises(RenderError, match=r"rendering took longer than 0\.05 s"):
        render_part(source, context(xs=list(range(100000))), html=False, syntax="velocity", timeout_s=0.05)
    assert render_part(source, context(xs=[1, 2]), html=False, syntax="velocity") == "2"


def test_a_template_cannot_change_the_data_the_events_other_messages_render() -> None:
    shared = context(items=["a"])
    with pytest.raises(RenderError, match="unsafe"):
        render_part("{{ data['items'].append('b') }}", shared, html=False)
    assert shared["data"] == {"items": ["a"]}


def test_typical_templates_render_as_before() -> None:
    source = (
        "Hi {{ contact.first_name }}: {% for item in data['items'] %}{{ item.name ~ ' x' ~ item.qty }}, {% endfor %}"
        "{{ data.total * 2 }} {{ 2 ** 10 }} {{ '%05.1f' % data.total }} {{ '{:>6}'.format(data.code) }} "
        "{{ data.tags|join('/') }} {{ '-' * 3 }} {{ data.code|center(8)|trim }} {{ data.none }} "
        "{{ data['items']|sum(attribute='qty') }} {{ 'see https://x.example'|urlize(target='_blank') }}."
    )
    data = {"items": [{"name": "Pro", "qty": 1}, {"name": "Seat", "qty": 3}], "total": 49.5, "tags": ["a", "b"]}
    rendered = render_part(source, context(**data, code="X1", none=None), html=True)
    assert rendered == (
        "Hi Ann: Pro x1, Seat x3, 99.0 1024 049.5     X1 a/b --- X1  4 "
        'see <a href="https://x.example" rel="noopener" target="_blank">https://x.example</a>.'
    )
    # Data larger than the bound passes through unchanged; a step that grows it past the bound is refused.
    large = "x" * 1_500_000
    assert render_part("{{ data.large|e|default('')|trim|upper }}", context(large=large), html=False) == "X" * 1_500_000
    with pytest.raises(RenderError, match="forceescape would build"):
        render_part("{{ data.large|forceescape }}", context(large=large + "&"), html=False)
    # At the bounds, not past them.
    assert len(render_part("{{ 'a' * 1000000 }}{{ 2 ** 4095 }}", context(), html=False)) == 1_000_000 + 1233
