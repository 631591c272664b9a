import pytest

from tripmail.errors import InvalidConfig
from tripmail.rendering.templates import RenderError, render_part, template_context
from tripmail.rendering.velocity.translation import to_jinja

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
        ("a\n#macro(x) b #end", r"line 2: #macro is outside the supported Velocity subset"),
        ("#if($i) #break #end", "#break outside a #foreach"),
        ("#foreach($i in $l)#break($foreach)#end", "#break is outside"),
        ("a #* open", "a #\\* comment has no \\*#"),
        ("#include('x.vm')", "#include is outside"),
        ("$!data.toString()", r"method call \$!data.toString"),
        ("#foreach($i in $list) x", "#foreach has no #end"),
        ("#if($x) x", "#if has no #end"),
        ("#foreach($i in [1,2]) x #end", r"#foreach\(\$item in \$reference\)"),
        ("#if $x #end", r"write this as #if\(condition\)"),
        ("#set($a.b = 1)", r"write this as #set\(\$name = value\)"),
        ("#set($a = [1, 2])", r"line 1: expected a reference"),
        ('#set($a = "$b c")', "single quotes"),
        ("#if($a == )x#end", "expected a reference"),
        ("#if(" + "(" * 5000 + "$x" + ")" * 5000 + ")y#end", "more than 24 operators and parentheses"),
        ("#if(" + "!" * 5000 + "$x)y#end", "more than 24 operators and parentheses"),
        ("#set($a = " + "- " * 5000 + "1)", "more than 24 operators and parentheses"),
        ("#if($x)" * 1000 + "#end" * 1000, "#if and #foreach nested more than 32 deep"),
        ("#if($a == 1 x#end", r"expected \) here"),
        ("#else", "#else outside an #if"),
        ("#foreach($i in $l)#elseif($i)#end", "#elseif outside an #if"),
        ("#foreach($i in $l)$foreach.parent#end", r"\$foreach.parent is not one of"),
        ("#foreach($i in $l)#set($i = 1)#end", r"\$i cannot name a loop's item: it is #set"),
        ("#foreach($i in $l)#set($velocityCount = 1)#end", r"#set cannot change the loop's own \$velocityCount"),
        ("Hi $self", r"\$self is a name this template language keeps"),
        ("#if($true)x#end", r"\$true is a name"),
        ("#set($self = 1)", r"\$self is a name"),
    ],
)
def test_outside_the_subset_is_refused_with_its_line(source: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message) as refused:
        to_jinja(source, name="templates.cart.text")
    assert refused.value.detail.startswith("templates.cart.text: ")


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
        ("#set($rt = $class.forName('java.lang.Runtime'))", "only references with .get"),
        ("$data.getClass().forName('java.lang.Runtime')", r"method call \$data.getClass\("),
    ],
)
def test_velocity_reflection_is_refused(source: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        to_jinja(source, name="templates.cart.text")


CART = {
    "array": [{"name": "Styler", "price": "341"}, {"name": "Nobile", "price": "2341"}, {"name": "Soap", "price": 5}]
}


def cart(source: str, *, html: bool = False) -> str:
    return render(source, {"items": CART}, data_param="items", html=html)


def test_size_of_a_list_or_map_and_nothing_for_anything_else() -> None:
    assert cart("$!data.get('array').size() items, $data.size() key") == "3 items, 1 key"
    assert cart("$!data.get('array').get(0).get('name').size()|$data.missing.size()") == "|$data.missing.size()"


def test_velocity_count_and_foreach_counters_are_one_based() -> None:
    source = "#foreach($item in $data.array)$velocityCount/$foreach.index:$item.name#if($foreach.hasNext), #end#end"
    assert cart(source) == "1/0:Styler, 2/1:Nobile, 3/2:Soap"
    nested = "#foreach($a in $data.array)#foreach($b in $data.array)$velocityCount#end;#end"
    assert cart(nested) == "123;123;123;"
    assert cart("$velocityCount $!foreach") == "$velocityCount "


@pytest.mark.parametrize(
    ("condition", "shown"),
    [
        ("$item.price > 1000", ["Nobile"]),
        ("$item.price gt 1000", ["Nobile"]),
        ("$item.price < 341", ["Soap"]),
        ("$item.price lt 341", ["Soap"]),
        ("$item.price >= 341", ["Styler", "Nobile"]),
        ("$item.price ge 341", ["Styler", "Nobile"]),
        ("$item.price <= 341", ["Styler", "Soap"]),
        ("$item.price le 341", ["Styler", "Soap"]),
        ("$item.name == 'Soap'", ["Soap"]),
        ("$item.name eq 'Soap'", ["Soap"]),
        ("$item.price == 5", ["Soap"]),
        ("$item.price == '5'", ["Soap"]),
        ("$item.name != 'Soap'", ["Styler", "Nobile"]),
        ("$item.name ne 'Soap'", ["Styler", "Nobile"]),
        ("$item.price > 100 && $item.price < 1000", ["Styler"]),
        ("$item.price > 100 and $item.price < 1000", ["Styler"]),
        ("$item.name == 'Soap' || $velocityCount == 1", ["Styler", "Soap"]),
        ("$item.name == 'Soap' or $velocityCount == 1", ["Styler", "Soap"]),
        ("!($item.price > 100)", ["Soap"]),
        ("not $item.name.startsWith", ["Styler", "Nobile", "Soap"]),
        ("$item.name > 'A'", []),
        ("$item.missing", []),
        ("$!item.name && $!item.name != ''", ["Styler", "Nobile", "Soap"]),
    ],
)
def test_if_conditions(condition: str, shown: list[str]) -> None:
    source = f"#foreach($item in $data.array)#if({condition})$item.name #end#end"
    assert cart(source).split() == shown


def test_if_elseif_else_takes_the_first_true_branch() -> None:
    source = (
        "#foreach($item in $data.array)#if($item.price > 1000)big#elseif($item.price == 341)mid#{else}small#end,#end"
    )
    assert cart(source) == "mid,big,small,"


def test_a_directive_alone_on_its_line_leaves_no_line_behind() -> None:
    source = "Your cart:\n#foreach($item in $data.array)\n  #if($velocityCount > 1)\n  - $item.name\n  #end\n#end\nBye"
    assert cart(source) == "Your cart:\n  - Nobile\n  - Soap\nBye"


def test_set_of_locals_lasts_across_loop_iterations_and_after_the_loop() -> None:
    source = (
        "#set($count = 0)#set($names = '')"
        "#foreach($item in $data.array)#set($count = $count + 1)#set($names = $names + $item.name + ' ')#end"
        "$count: $names|#set($half = 7 / 2)$half #set($rest = -7 % 3)$rest"
    )
    assert cart(source) == "3: Styler Nobile Soap |3 -1"


def test_set_starts_from_the_data_and_a_missing_value_unsets() -> None:
    assert render("$name/#set($name = 'Bo')$name", {"name": "Ann"}) == "Ann/Bo"
    assert render("#set($x = $data.missing)$x|$!x|#set($y = 'a' - 1)$!y.", {}) == "$x||."


def test_directives_inside_html_comments_leave_no_comment_behind() -> None:
    source = (
        "<ul><!-- #foreach($item in $data.array) -->"
        "<!--#if($item.price > 100)--><li>$velocityCount $item.name</li><!-- #end -->"
        "<!-- #end --></ul><!-- a real comment #end -->"
    )
    assert cart(source, html=True) == "<ul><li>1 Styler</li><li>2 Nobile</li></ul><!-- a real comment #end -->"


def test_values_set_and_compared_are_still_escaped_in_html() -> None:
    assert render("#set($x = $data.n)#if($x == '<i>')<b>$x</b>#end", {"n": "<i>"}, html=True) == "<b>&lt;i&gt;</b>"


def test_set_arithmetic_is_bounded_by_the_sandbox() -> None:
    source = "#set($n = 2)#foreach($i in $data.array)#set($n = $n * $n)#end$n"
    with pytest.raises(RenderError, match="bits"):
        render(source, {"array": list(range(20))})


def test_break_stops_the_loop_where_the_guide_shows_it() -> None:
    source = "#foreach($item in $data.array)$velocityCount:$item.name #if($velocityCount >= 2)#break#end#end."
    assert cart(source) == "1:Styler 2:Nobile ."


def test_comments_are_not_shown() -> None:
    source = "Hi ## not shown\n#* nor\nthis *#$!data.get('name')\n  #* alone *#\nBye"
    assert render(source, {"name": "Ann"}) == "Hi Ann\nBye"


def test_a_condition_of_24_operators_renders_and_a_longer_one_is_refused_at_apply() -> None:
    source = "#if(" + " && ".join(["($data.x == 1)"] * 8) + ")yes#end"  # 7 && + 8 ( + 8 ==
    assert render(source, {"x": 1}) == "yes"
    with pytest.raises(InvalidConfig, match="more than 24 operators"):
        to_jinja("#set($a = " + " + ".join(["1"] * 26) + ")$a", name="t")
