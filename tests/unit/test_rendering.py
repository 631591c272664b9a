import pytest
from jinja2.exceptions import SecurityError

from tripmail.errors import InvalidConfig
from tripmail.rendering.templates import RenderError, check_template, render_email, render_part, template_context


def context(**data: object) -> dict[str, object]:
    return template_context({"email": "ann@acme.test", "first_name": "Ann"}, dict(data), {"name": "FORGOT_PASSWORD"})


def test_request_values_are_data_not_template_source() -> None:
    rendered = render_email(
        "Hi {{ contact.first_name }} {{ code }}", "<p>{{ code }}</p>", "{{ data.code }}", context(code="{{ 7*7 }}")
    )
    assert rendered.subject == "Hi Ann {{ 7*7 }}"
    assert rendered.text == "{{ 7*7 }}"
    assert rendered.html == "<p>{{ 7*7 }}</p>"


def test_bare_data_names_and_named_parts() -> None:
    text = render_part(
        "{{ forgot_password_link }} {{ data.forgot_password_link }} {{ contact.email }} {{ event.name }}",
        context(forgot_password_link="https://x/r"),
        html=False,
    )
    assert text == "https://x/r https://x/r ann@acme.test FORGOT_PASSWORD"


def test_data_keys_named_like_dict_methods_are_the_data() -> None:
    # Seed 004's purchase event sends `items`; `data.items` must not be the dict's method.
    rendered = render_part(
        "{{ data.items[0] }} / {{ data.keys }} / {{ data.get('items')[0] }}",
        context(items=["Pro Plan - Annual"], keys="k"),
        html=False,
    )
    assert rendered == "Pro Plan - Annual / k / Pro Plan - Annual"


def test_data_cannot_shadow_contact_or_event() -> None:
    assert render_part("{{ contact.email }}", context(contact="evil"), html=False) == "ann@acme.test"


def test_html_part_escapes_values_text_part_does_not() -> None:
    rendered = render_email("s", "<b>{{ name }}</b>", "{{ name }}", context(name="<script>x</script>"))
    assert rendered.html == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert rendered.text == "<script>x</script>"


def test_missing_values_render_empty_even_when_chained() -> None:
    assert render_part("[{{ nothing }}][{{ data.a.b.c }}]", context(), html=False) == "[][]"


def test_subject_line_breaks_cannot_reach_the_header() -> None:
    rendered = render_email("Hi {{ name }}", None, "t", context(name="Ann\r\nBcc: victim@x.test"))
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    assert rendered.subject == "Hi Ann Bcc: victim@x.test"


def test_sandbox_refuses_reaching_into_python() -> None:
    with pytest.raises((SecurityError, RenderError)):
        render_part("{{ ''.__class__.__mro__[1].__subclasses__() }}", context(), html=False)


def test_syntax_error_names_the_part_and_line() -> None:
    with pytest.raises(InvalidConfig, match=r"templates\.reset\.html: line 2: .*"):
        check_template("ok\n{{ broken", name="templates.reset.html")


def test_apicontent_placeholders_and_lists() -> None:
    data = {"email_title": "New <videos>", "data_lines": ["Channel A", "Channel B"]}
    ctx = template_context({}, data, {})
    text = render_part(
        "{apicontent.email_title}\n{apicontent.data_lines}\n{{ apicontent.email_title }}",
        ctx,
        html=False,
        syntax="apicontent",
    )
    html = render_part("<p>{apicontent.data_lines}</p>", ctx, html=True, syntax="apicontent")
    assert text == "New <videos>\nChannel A\nChannel B\nNew <videos>"
    assert html == "<p>Channel A<br>Channel B</p>"


def test_apicontent_braces_are_plain_text_in_jinja_templates() -> None:
    assert render_part("{apicontent.x}", template_context({}, {"x": 1}, {}), html=False) == "{apicontent.x}"


def test_apicontent_placeholders_read_data_never_python_attributes() -> None:
    # Found by tests/unit/test_properties.py: {apicontent.items} showed "<built-in method items of dict object ...>".
    ctx = template_context({}, {"keys": "k"}, {})
    assert render_part("[{apicontent.items}][{apicontent.keys}]", ctx, html=False, syntax="apicontent") == "[][k]"


def test_json_null_renders_as_nothing() -> None:
    assert render_part("[{{ contact.phone }}]", template_context({"phone": None}, {}, {}), html=False) == "[]"
