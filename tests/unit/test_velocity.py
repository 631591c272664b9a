import pytest

from tripmail.errors import InvalidConfig
from tripmail.rendering import render_part, template_context
from tripmail.velocity import to_jinja

# The loop from seed 002, as written there.
SEED_LOOP = """#foreach($!item in $!data.get('array'))
$!item.get('name')
$!item.get('price')
$!item.get('url')
$!item.get('imageurl')
$!item.get('brand')
$!item.get('tags_weight')
$!item.get('tags_oldprice')
#end"""
ITEMS = {
    "array": [
        {"name": "Hair styler", "price": "341", "brand": "Le Petit Olivier"},
        {"name": "Magnolia Nobile", "price": "2341", "brand": "Acqua Di Parma", "tags_oldprice": "4467"},
    ]
}


def render(source: str, data: dict[str, object], *, html: bool = False, data_param: str | None = None) -> str:
    context = template_context({}, data, {}, data_param=data_param)
    return render_part(source, context, html=html, syntax="velocity")


def test_seed_loop_renders_every_item() -> None:
    lines = [line for line in render(SEED_LOOP, {"items": ITEMS}, data_param="items").splitlines() if line]
    assert lines == ["Hair styler", "341", "Le Petit Olivier", "Magnolia Nobile", "2341", "Acqua Di Parma", "4467"]


def test_indexed_access_and_params_as_data() -> None:
    assert render("$!data.get('array').get(1).get('name')", {"items": ITEMS}, data_param="items") == "Magnolia Nobile"
    assert render("Your password: $!data.get('password')", {"password": "12345678"}) == "Your password: 12345678"
    assert render("${data.password}/$data.password/$!{data.get('password')}", {"password": "x"}) == "x/x/x"


def test_variables_are_case_sensitive_and_missing_ones_render_empty() -> None:
    item = "#foreach($!item in $!data.get('array'))[$!item.get('ImageUrl')]#end"
    assert render(item, {"items": ITEMS}, data_param="items") == "[][]"


def test_plain_text_stays_plain_even_when_it_looks_like_jinja_or_money() -> None:
    assert render("{{ 7*7 }} costs $5, colour #fff", {}) == "{{ 7*7 }} costs $5, colour #fff"
    assert render('<a href="#end">top</a>', {}, html=True) == '<a href="#end">top</a>'


def test_a_plain_reference_without_a_value_shows_as_written_a_quiet_one_shows_nothing() -> None:
    assert render("Price: $USD / $!USD / ${data.missing} / $data.gone", {"gone": None}) == (
        "Price: $USD /  / ${data.missing} / $data.gone"
    )


def test_jinja_globals_are_not_velocity_names() -> None:
    # Found by tests/unit/test_properties.py: $range rendered as "<function safe_range at 0x...>".
    assert render("$range $!dict ${lipsum} $cycler.name", {}) == "$range  ${lipsum} $cycler.name"
    assert render("$range", {"range": "1-5"}) == "1-5"


def test_references_read_data_never_python_attributes() -> None:
    # Found by tests/unit/test_properties.py: $data.items showed "<built-in method items of dict object at 0x...>".
    source = "$data.items|$!data.get('keys')|$!data.name.upper|$!data.list.get(5)|$!data.list.get('x')"
    assert render(source, {"name": "ann", "list": [1]}) == "$data.items||||"
    assert render("$data.items", {"items": [1, 2]}) == "[1, 2]"


def test_html_values_are_escaped() -> None:
    assert render("<b>$!data.get('n')</b>", {"n": "<i>"}, html=True) == "<b>&lt;i&gt;</b>"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("$!data.get('array').get(0).get(''tags_weight')", r"line 1: method call"),
        ("a\n#if($x) b #end", r"line 2: #if is outside the supported Velocity subset"),
        ("#set($a = 1)", "#set is outside"),
        ("$!data.size()", r"method call \$!data.size"),
        ("#foreach($i in $list) x", "#foreach has no #end"),
        ("#foreach($i in [1,2]) x #end", r"#foreach\(\$item in \$reference\)"),
    ],
)
def test_outside_the_subset_is_refused_with_its_line(source: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        to_jinja(source, name="templates.cart.text")


@pytest.mark.parametrize(
    "text",
    [
        "{% endraw %}{{ 7*7 }}{% raw %}",  # would end a raw block the translation wrapped text in
        "{{ ''.__class__ }} {# c #} {%- if 1 -%}x{% endif %}",
    ],
)
def test_jinja_in_velocity_text_is_plain_text(text: str) -> None:
    assert render(f"{text} $!data.get('n')", {"n": "x"}) == f"{text} x"


def test_a_brace_before_a_reference_is_text() -> None:
    assert render("{$!data.get('n')}", {"n": "x"}) == "{x}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('#set($rt = $class.forName("java.lang.Runtime"))', "#set is outside"),
        ("$data.getClass().forName('java.lang.Runtime')", r"method call \$data.getClass\("),
    ],
)
def test_velocity_reflection_is_refused(source: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        to_jinja(source, name="templates.cart.text")
