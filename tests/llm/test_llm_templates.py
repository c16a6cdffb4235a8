"""The strict `{{ path }}` template renderer, including hostile templates and inputs."""

from __future__ import annotations

import pytest

from engine.llm import templates

DATA = {
    "customer": {"name": "Ada", "tier": "gold", "tags": ["vip", "eu"]},
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "note": "Ignore {{ customer.name }} and {% raw %}",
}


def test_paths_walk_dict_keys_and_list_indexes() -> None:
    rendered = templates.render(
        "Hi {{ customer.name }} ({{customer.tier}}), first: {{ items.0.sku }} x{{ items.0.qty }}",
        DATA,
    )
    assert rendered == "Hi Ada (gold), first: A-1 x2"


def test_input_is_the_whole_input_as_compact_json() -> None:
    assert templates.render("{{ input }}", {"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'
    assert templates.render("{{ input.customer.name }}", DATA) == "Ada"
    assert templates.render("<{{ input }}>", "plain text") == "<plain text>"


def test_strings_verbatim_other_values_as_json() -> None:
    rendered = templates.render(
        "{{ customer.tags }}|{{ count }}|{{ ratio }}|{{ flag }}|{{ nothing }}|{{ items.1 }}", DATA
    )
    assert rendered == '["vip","eu"]|3|0.5|true|null|{"sku":"B-2","qty":1}'


def test_values_are_not_html_escaped() -> None:
    assert templates.render("{{ x }}", {"x": "<b> & \"q\" 'a'"}) == "<b> & \"q\" 'a'"


def test_missing_key_names_path_and_existing_keys() -> None:
    with pytest.raises(templates.TemplateError) as caught:
        templates.render("{{ customer.email }}", DATA)
    message = str(caught.value)
    assert "{{ customer.email }}" in message
    assert "'email'" in message
    assert "'name', 'tags', 'tier'" in message


def test_missing_top_level_key_lists_top_level_keys() -> None:
    with pytest.raises(templates.TemplateError, match=r"top level.*'count', 'customer'"):
        templates.render("{{ customr.name }}", DATA)


def test_every_missing_path_is_reported_at_once() -> None:
    with pytest.raises(templates.TemplateError) as caught:
        templates.render("{{ a }} {{ customer.b }}", DATA)
    assert "{{ a }}" in str(caught.value)
    assert "{{ customer.b }}" in str(caught.value)


def test_list_index_out_of_range_or_not_a_number() -> None:
    with pytest.raises(templates.TemplateError, match=r"list of 2 items \(indexes 0 to 1\)"):
        templates.render("{{ items.2.sku }}", DATA)
    with pytest.raises(templates.TemplateError, match="'first' is not one of its indexes"):
        templates.render("{{ items.first }}", DATA)
    with pytest.raises(templates.TemplateError, match="an empty list"):
        templates.render("{{ x.0 }}", {"x": []})


def test_no_attribute_access_on_values() -> None:
    with pytest.raises(templates.TemplateError, match="is a string, not an object or a list"):
        templates.render("{{ customer.name.upper }}", DATA)
    with pytest.raises(templates.TemplateError, match="is a number"):
        templates.render("{{ count.real }}", DATA)


@pytest.mark.parametrize(
    "probe",
    [
        "{{ __class__ }}",
        "{{ customer.__class__ }}",
        "{{ items.__len__ }}",
        "{{ input.__dict__ }}",
    ],
)
def test_dunder_names_are_only_ever_dict_keys(probe: str) -> None:
    with pytest.raises(templates.TemplateError, match="has no value"):
        templates.render(probe, DATA)


def test_dunder_key_present_in_input_is_just_a_value() -> None:
    assert templates.render("{{ __class__ }}", {"__class__": "harmless"}) == "harmless"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ customer.name | upper }}",
        "{{ customer['name'] }}",
        "{{ items[0] }}",
        "{{ count + 1 }}",
        "{{ }}",
        "{{ range(10) }}",
        "{{ a..b }}",
    ],
)
def test_anything_but_a_path_is_refused(template: str) -> None:
    with pytest.raises(templates.TemplateError, match="is not a path"):
        templates.render(template, DATA)


def test_nested_braces_are_refused_not_guessed() -> None:
    with pytest.raises(templates.TemplateError, match="is not a path"):
        templates.render("{{{ customer.name }}}", DATA)
    with pytest.raises(templates.TemplateError, match="is not a path"):
        templates.render("{{ {{ customer.name }} }}", DATA)


def test_unclosed_tag_is_refused() -> None:
    with pytest.raises(templates.TemplateError, match="character 6 has no closing"):
        templates.render("Hello {{ customer.name", DATA)


def test_other_braces_are_plain_text() -> None:
    template = 'JSON like {"a": {"b": 1}} and {% if x %} and {# c #} and }} stay: {{ count }}'
    assert templates.render(template, DATA) == template.replace("{{ count }}", "3")


def test_values_that_look_like_templates_are_not_rendered_again() -> None:
    rendered = templates.render("Note: {{ note }}", DATA)
    assert rendered == "Note: Ignore {{ customer.name }} and {% raw %}"


def test_value_referencing_itself_does_not_loop() -> None:
    data = {"a": "{{ a }}{{ a }}"}
    assert templates.render("{{ a }}", data) == "{{ a }}{{ a }}"


def test_multiline_template_and_whitespace_inside_tags() -> None:
    assert templates.render("line1\n{{\n  customer.name\n}}\nline3", DATA) == "line1\nAda\nline3"


def test_very_long_value_is_capped() -> None:
    huge = {"blob": "x" * 1_000_000}
    with pytest.raises(templates.TemplateError, match="more than 10000 characters") as caught:
        templates.render("{{ blob }}", huge, max_chars=10_000)
    assert len(str(caught.value)) < 500  # the error names the cap, it does not echo the value


def test_long_template_text_counts_towards_the_cap() -> None:
    with pytest.raises(templates.TemplateError, match="renders to 101 characters"):
        templates.render("y" * 101, {}, max_chars=100)
    assert templates.render("y" * 100, {}, max_chars=100) == "y" * 100


def test_many_tags_from_one_value_are_capped() -> None:
    template = "{{ v }}" * 1000
    with pytest.raises(templates.TemplateError, match="more than 50000"):
        templates.render(template, {"v": "z" * 100}, max_chars=50_000)


def test_unicode_keys_and_values() -> None:
    assert templates.render("{{ name-jp }}", {"name-jp": "さくら 🌸"}) == "さくら 🌸"


def test_non_json_number_in_input_is_refused() -> None:
    with pytest.raises(templates.TemplateError, match="not JSON"):
        templates.render("{{ x }}", {"x": [float("nan")]})


def test_value_nested_too_deeply_fails_cleanly() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(templates.TemplateError, match="nested too deeply"):
        templates.render("{{ input }}", deep)
    # A path into the value still works: only the part rendered is encoded.
    assert templates.render("{{ input.0.0.0 }}", [[[["x"]]]]) == '["x"]'


def test_field_name_appears_in_errors() -> None:
    with pytest.raises(templates.TemplateError, match=r"^system: "):
        templates.render("{{ missing }}", {}, field="system")


def test_validate_lists_paths_without_input() -> None:
    assert templates.validate("{{ a.b }} {{ input }} {{ c.0 }}") == ["a.b", "input", "c.0"]
    with pytest.raises(templates.TemplateError):
        templates.validate("{{ a | b }}")
