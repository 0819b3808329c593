"""Unit tests for worker.rendering: templates, front matter, sandboxing, footers, SMS parts."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.kit.problems import Problem
from worker.rendering.errors import RenderError
from worker.rendering.samples import render_preview, sample_context
from worker.rendering.templates import SUFFIX, Templates
from worker.rendering.text import sms_segments

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


@pytest.fixture
def templates() -> Templates:
    return Templates(FIXTURES)


@pytest.fixture
def context() -> dict[str, Any]:
    ctx = sample_context({"attributes": {"plan": "Team"}}, now=NOW)
    ctx["event"]["properties"] = {"trial_ends": "March 16", "cart_token": "c4", "number": "A-7"}
    return ctx


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def email(root: Path, name: str, front: str, body: str) -> Path:
    return write(root, f"{name}.html.j2", f"---\n{front}---\n{body}")


# --- names and paths ---------------------------------------------------------------------------


def test_names_lists_channel_templates_but_not_partials_or_text_parts(templates: Templates) -> None:
    assert templates.names() == [
        ("email", "receipts/invoice"),
        ("email", "trial/day3"),
        ("email", "trial/linked"),
        ("email", "trial/welcome"),
        ("sms", "cart"),
        ("whatsapp", "cart"),
    ]


def test_names_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert Templates(tmp_path / "nowhere").names() == []


def test_path_and_exists(templates: Templates) -> None:
    assert templates.path("email", "trial/welcome") == FIXTURES / "trial" / "welcome.html.j2"
    assert templates.path("sms", "cart") == FIXTURES / "cart.sms.j2"
    assert templates.exists("whatsapp", "cart")
    assert not templates.exists("sms", "trial/welcome")


@pytest.mark.parametrize("name", ["../secrets", "/etc/passwd", "a//b", "", "a\\b", "./x"])
def test_names_escaping_the_root_are_rejected(templates: Templates, name: str) -> None:
    with pytest.raises(ValueError, match="not a template name"):
        templates.path("email", name)
    assert not templates.exists("email", name)
    with pytest.raises(RenderError):
        templates.render_email(name, {})


# --- email rendering ---------------------------------------------------------------------------


def test_subject_preheader_from_and_reply_to_are_rendered(
    templates: Templates, context: dict[str, Any]
) -> None:
    rendered = templates.render_email("trial/welcome", context)
    assert rendered.subject == "Welcome to Acme, Ana!"
    assert rendered.preheader == "Your Team starts today"
    assert rendered.from_address == "Ana at Acme <ana@acme.example>"
    assert rendered.reply_to == "help@acme.example"
    assert not rendered.transactional
    assert "<h1>Hi Ana</h1>" in rendered.html


def test_subject_is_one_line_even_with_newlines_in_lead_data(
    templates: Templates, context: dict[str, Any]
) -> None:
    context["lead"]["first_name"] = "Ana\r\nBcc: victim@example.com"
    rendered = templates.render_email("trial/welcome", context)
    assert rendered.subject == "Welcome to Acme, Ana Bcc: victim@example.com!"


def test_subject_is_not_html_escaped_but_body_is(tmp_path: Path) -> None:
    email(tmp_path, "x", 'subject: "Tips & tricks for {{ lead.name }}"\n', "<p>{{ lead.name }}</p>")
    rendered = Templates(tmp_path).render_email(
        "x", {"lead": {"name": "<Ana>"}, "unsubscribe_url": "https://u"}
    )
    assert rendered.subject == "Tips & tricks for <Ana>"
    assert "<p>&lt;Ana&gt;</p>" in rendered.html


def test_text_part_is_derived_from_html_when_there_is_no_txt_template(
    templates: Templates, context: dict[str, Any]
) -> None:
    rendered = templates.render_email("trial/day3", context)
    assert rendered.preheader is None
    assert rendered.from_address is None
    assert "Tips for Ana" in rendered.text
    assert "https://acme.example/docs?from=email&day=3" in rendered.text
    assert "<" not in rendered.text.replace("<Ana", "")
    assert "color: #333" not in rendered.text


def test_explicit_text_part_wins_over_derived_text(
    templates: Templates, context: dict[str, Any]
) -> None:
    rendered = templates.render_email("trial/welcome", context)
    assert rendered.text.startswith("Hi Ana,\n\nyour trial runs until March 16.")
    assert "<h1>" not in rendered.text
    assert "#" not in rendered.text


def test_text_part_is_not_html_escaped(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\ntransactional: true\n", "<p>{{ v }}</p>")
    write(tmp_path, "x.txt.j2", "{{ v }}")
    rendered = Templates(tmp_path).render_email("x", {"v": "A & B"})
    assert rendered.text == "A & B"
    assert "A &amp; B" in rendered.html


# --- errors at the right file line -------------------------------------------------------------


def test_undefined_name_raises_render_error_with_file_and_line(tmp_path: Path) -> None:
    path = email(tmp_path, "x", "subject: Hi\n", "<p>one</p>\n<p>{{ lead.nickname }}</p>\n")
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render_email("x", sample_context(now=NOW))
    problem = caught.value.problem
    assert (problem.path, problem.line) == (path, 5)
    assert "nickname" in problem.message
    assert "default" in problem.message
    assert str(caught.value) == f"{path}:5: {problem.message}"


def test_undefined_name_in_subject_points_at_the_subject_line(tmp_path: Path) -> None:
    path = email(tmp_path, "x", "preheader: p\nsubject: Hi {{ lead.nick }}\n", "<p>x</p>")
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render_email("x", sample_context(now=NOW))
    assert (caught.value.problem.path, caught.value.problem.line) == (path, 3)


def test_undefined_name_in_an_included_partial_points_at_the_partial(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\n", "<p>a</p>\n{% include '_p/f.html.j2' %}\n")
    partial = write(tmp_path, "_p/f.html.j2", "<p>ok</p>\n<p>{{ missing }}</p>\n")
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render_email("x", sample_context(now=NOW))
    assert (caught.value.problem.path, caught.value.problem.line) == (partial, 2)


def test_missing_include_is_reported_at_the_include_line(tmp_path: Path) -> None:
    path = email(tmp_path, "x", "subject: s\n", "<p>a</p>\n{% include '_p/nope.html.j2' %}\n")
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render_email("x", sample_context(now=NOW))
    assert (caught.value.problem.path, caught.value.problem.line) == (path, 5)
    assert "_p/nope.html.j2" in caught.value.problem.message


def test_missing_template_raises_render_error(templates: Templates) -> None:
    with pytest.raises(RenderError, match="template not found"):
        templates.render_email("trial/nope", {})
    with pytest.raises(RenderError, match="template not found"):
        templates.render_text("sms", "nope", {})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ lead.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_access_to_internals(tmp_path: Path, source: str) -> None:
    path = email(tmp_path, "x", "subject: s\ntransactional: true\n", f"<p>ok</p>\n{source}\n")
    templates = Templates(tmp_path)
    with pytest.raises(RenderError, match="sandbox") as caught:
        templates.render_email("x", {"lead": {}})
    assert (caught.value.problem.path, caught.value.problem.line) == (path, 6)
    with pytest.raises(RenderError):
        templates.render_string(source, {"lead": {}})


def test_templates_cannot_mutate_the_context(templates: Templates) -> None:
    lead: dict[str, Any] = {"attributes": {"plan": "free"}}
    with pytest.raises(RenderError, match="sandbox"):
        templates.render_string("{{ lead.attributes.update({'plan': 'pro'}) }}", {"lead": lead})
    assert lead == {"attributes": {"plan": "free"}}


def test_render_error_survives_pickling() -> None:
    error = RenderError(Problem(Path("t/x.html.j2"), 3, 1, "boom"))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problem == error.problem
    assert str(copy) == "t/x.html.j2:3: boom"


# --- check -------------------------------------------------------------------------------------


def test_fixture_templates_have_no_problems(templates: Templates) -> None:
    for channel, name in templates.names():
        assert templates.check(channel, name) == [], (channel, name)


def test_check_reports_body_syntax_error_at_the_file_line_after_front_matter(
    tmp_path: Path,
) -> None:
    # Lines 1-4 are front matter; the broken tag is on body line 3, file line 7.
    path = email(
        tmp_path,
        "x",
        "subject: Hi\npreheader: there\n",
        "<html>\n<body>\n<p>Hi {{ lead.first_name }</p>\n</body>\n",
    )
    problems = Templates(tmp_path).check("email", "x")
    assert len(problems) == 1
    assert problems[0].path == path
    assert problems[0].line == 7
    assert "syntax" in problems[0].message
    assert "'}'" in problems[0].message


def test_check_reports_syntax_errors_in_subject_and_preheader(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: Hi {{ lead.first_name\npreheader: '{% if %}'\n", "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert [p.line for p in problems] == [2, 3]
    assert all("syntax" in p.message for p in problems)


def test_check_reports_syntax_errors_in_the_text_part(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\n", "<p>x</p>")
    text = write(tmp_path, "x.txt.j2", "Hi\n\n{{ lead.first_name }\n")
    problems = Templates(tmp_path).check("email", "x")
    assert [(p.path, p.line) for p in problems] == [(text, 3)]


def test_check_reports_syntax_errors_in_sms(tmp_path: Path) -> None:
    path = write(tmp_path, "x.sms.j2", "Hi {% for %}\n")
    problems = Templates(tmp_path).check("sms", "x")
    assert [(p.path, p.line) for p in problems] == [(path, 1)]


def test_check_reports_a_missing_subject(tmp_path: Path) -> None:
    email(tmp_path, "x", "preheader: p\n", "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert len(problems) == 1
    assert "no subject" in problems[0].message
    with pytest.raises(RenderError, match="no subject"):
        Templates(tmp_path).render_email("x", {})


def test_check_reports_an_empty_front_matter(tmp_path: Path) -> None:
    write(tmp_path, "x.html.j2", "---\n---\n<p>x</p>")
    assert ["no subject" in p.message for p in Templates(tmp_path).check("email", "x")] == [True]


def test_check_reports_unknown_front_matter_keys_with_their_line(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\nreply-to: a@b.example\ncolour: red\n", "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert [(p.line, p.column) for p in problems] == [(3, 1), (4, 1)]
    assert "`reply-to`" in problems[0].message
    assert "did you mean `reply_to`" in problems[0].message
    assert "`colour`" in problems[1].message


def test_check_reports_yaml_errors_with_their_line(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\npreheader: [oops\n", "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert len(problems) == 1
    assert "not valid YAML" in problems[0].message
    assert problems[0].line >= 3


def test_check_hints_at_quoting_an_unquoted_jinja_subject(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: {{ lead.first_name }}, welcome\n", "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert len(problems) == 1
    assert problems[0].line == 2
    assert "quote" in problems[0].message


@pytest.mark.parametrize(
    ("front", "line", "fragment"),
    [
        ("subject: {{ lead.first_name }}\n", 2, "quotes"),
        ("subject: ''\n", 2, "empty"),
        ("subject: s\ntransactional: yes\n", 3, "true or false"),
        ("subject: s\nfrom: 42\n", 3, "must be text"),
    ],
)
def test_check_reports_bad_front_matter_values(
    tmp_path: Path, front: str, line: int, fragment: str
) -> None:
    email(tmp_path, "x", front, "<p>x</p>")
    problems = Templates(tmp_path).check("email", "x")
    assert [p.line for p in problems] == [line]
    assert fragment in problems[0].message


def test_check_reports_missing_and_unclosed_front_matter(tmp_path: Path) -> None:
    write(tmp_path, "bare.html.j2", "<p>no front matter</p>")
    write(tmp_path, "open.html.j2", "---\nsubject: s\n<p>x</p>")
    templates = Templates(tmp_path)
    assert ["front matter" in p.message for p in templates.check("email", "bare")] == [True]
    assert ["not closed" in p.message for p in templates.check("email", "open")] == [True]


def test_check_reports_a_missing_file_and_a_name_with_its_suffix(templates: Templates) -> None:
    [missing] = templates.check("email", "trial/nope")
    assert missing.path == FIXTURES / "trial" / "nope.html.j2"
    assert (missing.line, missing.column) == (1, 1)
    [suffixed] = templates.check("email", "trial/welcome.html.j2")
    assert "without .html.j2" in suffixed.message


def test_check_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "x.sms.j2").write_bytes(b"Hi\nthere \xff\n")
    [problem] = Templates(tmp_path).check("sms", "x")
    assert problem.line == 2
    assert "UTF-8" in problem.message


def test_check_string_reports_the_line_in_the_calling_file() -> None:
    templates = Templates(Path("unused"))
    where = Path("sequences/trial.yaml")
    [problem] = templates.check_string("Call\n{{ lead.first_name ", path=where, line=12)
    assert (problem.path, problem.line) == (where, 13)
    assert templates.check_string("Call {{ lead.first_name }}") == []


def test_edited_templates_are_reloaded(tmp_path: Path) -> None:
    write(tmp_path, "x.sms.j2", "one")
    templates = Templates(tmp_path)
    assert templates.render_text("sms", "x", {}) == "one"
    write(tmp_path, "x.sms.j2", "second version")
    assert templates.render_text("sms", "x", {}) == "second version"


# --- unsubscribe footer ------------------------------------------------------------------------


def test_marketing_email_gets_an_unsubscribe_footer_before_body_end(
    templates: Templates, context: dict[str, Any]
) -> None:
    rendered = templates.render_email("trial/welcome", context)
    url = context["unsubscribe_url"]
    assert rendered.html.count(f'href="{url}"') == 1
    footer_at = rendered.html.index("Unsubscribe</a></p>")
    assert footer_at < rendered.html.index("</body>")
    assert rendered.text.endswith(f"\n\nUnsubscribe: {url}")


def test_footer_is_appended_when_there_is_no_body_tag(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\n", "<p>Hello</p>\n")
    rendered = Templates(tmp_path).render_email("x", {"unsubscribe_url": "https://u/1?a=1&b=2"})
    assert rendered.html.startswith("<p>Hello</p>\n<p style=")
    assert 'href="https://u/1?a=1&amp;b=2"' in rendered.html
    assert rendered.text == "Hello\n\nUnsubscribe: https://u/1?a=1&b=2"


def test_transactional_email_gets_no_footer(templates: Templates, context: dict[str, Any]) -> None:
    rendered = templates.render_email("receipts/invoice", context)
    assert rendered.transactional
    assert rendered.subject == "Invoice A-7"
    assert "Unsubscribe" not in rendered.html
    assert "Unsubscribe" not in rendered.text
    assert context["unsubscribe_url"] not in rendered.html + rendered.text


def test_footer_is_not_duplicated_when_the_template_links_unsubscribe_url(
    templates: Templates, context: dict[str, Any]
) -> None:
    context["unsubscribe_url"] = "https://acme.example/u?t=1&l=2"
    rendered = templates.render_email("trial/linked", context)
    assert rendered.html.count("https://acme.example/u?t=1&amp;l=2") == 1
    assert "You are receiving this" not in rendered.html
    assert rendered.text.count("https://acme.example/u?t=1&l=2") == 1


def test_marketing_email_without_unsubscribe_url_is_an_error(tmp_path: Path) -> None:
    email(tmp_path, "x", "subject: s\n", "<p>x</p>")
    with pytest.raises(RenderError, match="unsubscribe_url"):
        Templates(tmp_path).render_email("x", {})


# --- default(), None and escaping --------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "expected"),
    [({"first_name": None}, "there"), ({}, "there"), ({"first_name": "Ana"}, "Ana")],
)
def test_default_filter_replaces_none_and_undefined(
    templates: Templates, lead: dict[str, Any], expected: str
) -> None:
    source = "{{ lead.first_name | default('there') }}"
    assert templates.render_string(source, {"lead": lead}) == expected
    assert templates.render_string(source.replace("default", "d"), {"lead": lead}) == expected


def test_default_filter_keeps_falsy_values_unless_boolean(templates: Templates) -> None:
    ctx = {"lead": {"score": 0, "segment": ""}}
    assert templates.render_string("{{ lead.score | default(5) }}", ctx) == "0"
    assert templates.render_string("{{ lead.segment | default('x', true) }}", ctx) == "x"
    assert templates.render_string("{{ lead.segment | default('x', boolean=true) }}", ctx) == "x"


def test_none_prints_as_nothing(templates: Templates) -> None:
    assert templates.render_string("Hi {{ name }}!", {"name": None}) == "Hi !"


def test_sms_and_whatsapp_are_not_escaped_and_are_stripped(
    templates: Templates, context: dict[str, Any]
) -> None:
    context["lead"]["first_name"] = "Ana & Bo"
    sms = templates.render_text("sms", "cart", context)
    assert sms == "Hi Ana & Bo, your cart is waiting: https://acme.example/c/c4"
    assert templates.render_text("whatsapp", "cart", context) == (
        "Hi Ana & Bo 👋 your cart is waiting."
    )


def test_render_text_refuses_email(templates: Templates) -> None:
    with pytest.raises(ValueError, match="render_email"):
        templates.render_text("email", "trial/welcome", {})


def test_render_string(templates: Templates, context: dict[str, Any]) -> None:
    assert templates.render_string("Call {{ lead.first_name }}", context) == "Call Ana"
    assert templates.render_string("{{ lead.attributes.plan }}", context) == "Team"
    assert templates.render_string("<{{ lead.last_name }}>", context) == "<Ito>"


def test_render_string_errors_point_at_the_given_file_line(templates: Templates) -> None:
    where = Path("sequences/trial.yaml")
    with pytest.raises(RenderError) as caught:
        templates.render_string("Call {{ lead.nick }}", {"lead": {}}, path=where, line=8)
    assert (caught.value.problem.path, caught.value.problem.line) == (where, 8)
    with pytest.raises(RenderError, match="syntax"):
        templates.render_string("Call {{ lead.nick ", {"lead": {}})


# --- sms_segments ------------------------------------------------------------------------------


def test_gsm_basic_table_has_127_characters_besides_escape() -> None:
    assert len(set(GSM_BASIC)) == 127
    assert sms_segments(GSM_BASIC) == 1


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 0),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("a" * 159 + "€", 2),
        ("a" * 152 + "{" + "a" * 10, 2),
        ("a" * 152 + "{" + "a" * 152, 3),
        ("Hi 👋", 1),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
        ("é" * 160, 1),
        ("ê" * 70, 1),
        ("ê" * 71, 2),
        ("ê" * 134, 2),
        ("ê" * 135, 3),
        ("a" * 66 + "😀" + "a" * 10, 2),
    ],
)
def test_sms_segments(body: str, segments: int) -> None:
    assert sms_segments(body) == segments


@given(st.text(alphabet=st.sampled_from("abcXYZ019 .,!?@"), min_size=1, max_size=1000))
def test_sms_segments_for_plain_gsm_text(body: str) -> None:
    expected = 1 if len(body) <= 160 else -(-len(body) // 153)
    assert sms_segments(body) == expected


@given(st.text(max_size=300), st.text(min_size=1, max_size=300))
def test_sms_segments_grow_with_the_message(head: str, tail: str) -> None:
    assert 1 <= sms_segments(head + tail) >= sms_segments(head)


# --- sample_context and previews ---------------------------------------------------------------


def test_sample_context_defaults() -> None:
    ctx = sample_context(now=NOW)
    assert ctx["lead"] == {
        "email": "ana@example.com",
        "phone": "+4915112345678",
        "external_id": None,
        "first_name": "Ana",
        "last_name": "Ito",
        "timezone": "Europe/Berlin",
        "score": 0,
        "segment": None,
        "consent": {"email": True, "sms": True},
        "attributes": {},
    }
    assert ctx["event"] == {"type": "sample", "properties": {}, "occurred_at": NOW}
    assert ctx["unsubscribe_url"] == "https://example.com/u/sample"
    assert (ctx["sequence"]["id"], ctx["step"]["id"], ctx["now"]) == ("sample", "sample", NOW)


def test_sample_context_merges_the_given_lead() -> None:
    lead = {"first_name": None, "external_id": "crm-1", "consent": {"sms": False}}
    ctx = sample_context(lead, sequence="trial", step="welcome", now=NOW)
    assert ctx["lead"]["first_name"] is None
    assert ctx["lead"]["external_id"] == "crm-1"
    assert ctx["lead"]["email"] == "ana@example.com"
    assert ctx["lead"]["consent"] == {"email": True, "sms": False}
    assert (ctx["sequence"]["id"], ctx["step"]["id"]) == ("trial", "welcome")
    assert lead == {"first_name": None, "external_id": "crm-1", "consent": {"sms": False}}


def test_sample_context_uses_the_current_time_and_rejects_naive_now() -> None:
    before = datetime.now(UTC)
    assert sample_context()["now"] >= before
    with pytest.raises(ValueError, match="timezone"):
        sample_context(now=datetime(2026, 1, 1, 9))


def test_preview_of_an_email(templates: Templates, context: dict[str, Any]) -> None:
    preview = render_preview(templates, "email", "trial/welcome", context)
    assert preview.splitlines()[:5] == [
        "Subject: Welcome to Acme, Ana!",
        "Preheader: Your Team starts today",
        "From: Ana at Acme <ana@acme.example>",
        "Reply-To: help@acme.example",
        "--- text ---",
    ]
    assert preview.index("--- text ---") < preview.index("Hi Ana,") < preview.index("--- html ---")
    assert preview.index("--- html ---") < preview.index("<h1>Hi Ana</h1>")


def test_preview_of_an_email_without_optional_headers(
    templates: Templates, context: dict[str, Any]
) -> None:
    preview = render_preview(templates, "email", "trial/day3", context)
    assert preview.splitlines()[:2] == ["Subject: Three days in", "--- text ---"]


def test_preview_of_sms_and_whatsapp(templates: Templates, context: dict[str, Any]) -> None:
    sms = render_preview(templates, "sms", "cart", context)
    assert sms == "Hi Ana, your cart is waiting: https://acme.example/c/c4\n\n(1 segment)"
    context["lead"]["first_name"] = "A" * 150
    assert render_preview(templates, "sms", "cart", context).endswith("(2 segments)")
    assert render_preview(templates, "whatsapp", "cart", context).endswith("waiting.")


def test_every_channel_has_a_suffix() -> None:
    assert set(SUFFIX) == {"email", "sms", "whatsapp"}


def test_windows_line_endings_keep_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.html.j2"
    path.write_bytes(
        b"---\r\nsubject: s\r\ntransactional: true\r\n---\r\n<p>\r\n{{ nope }}</p>\r\n"
    )
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render_email("x", {})
    assert caught.value.problem.line == 6
