"""`nurture validate`: the mistakes marketers make, each reported at file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli.main import app

GOOD = """\
name: Welcome
enroll:
  on: signed_up
steps:
  - id: one
    day: 1
    email: welcome/one
  - id: two
    day: 3
    email: welcome/one
"""
TEMPLATE = "---\nsubject: \"Hi {{ lead.first_name | default('there') }}\"\n---\n<p>Hi</p>\n"


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sequences").mkdir()
    (tmp_path / "templates" / "welcome").mkdir(parents=True)
    (tmp_path / "templates" / "welcome" / "one.html.j2").write_text(TEMPLATE)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def validate(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["validate", str(root)])
    return result.exit_code, result.output


def test_a_good_project_validates_with_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = validate(project(tmp_path, {"sequences/welcome.yaml": GOOD}), monkeypatch)
    assert code == 0, output
    assert output.strip() == "ok: 1 sequence(s), 1 template(s) valid"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (
            GOOD.replace("  - id: two\n    day: 3", "  - id: two\n\tday: 3"),
            "sequences/welcome.yaml:9:1: YAML syntax",
        ),
        (GOOD.replace("    day: 3", "    dya: 3"), "sequences/welcome.yaml:9:5: unknown key 'dya'; did you mean 'day'?"),
        (
            GOOD.replace("    day: 3", "    day: 3\n    after: 2h"),
            "sequences/welcome.yaml:8:5: a step needs exactly one of day, at or after (it has day and after)",
        ),
        (
            GOOD.replace("    day: 3\n    email: welcome/one", "    day: 3\n    email: welcome/too"),
            "sequences/welcome.yaml:10:12: email: no template 'welcome/too': create templates/welcome/too.html.j2",
        ),
        (
            GOOD.replace("    day: 3", "    after: 2 days"),
            "sequences/welcome.yaml:9:12: after: '2 days' is not a duration: write it like 30s, 15m, 1h, 2d, 1w, 1d12h or -24h",
        ),
        (
            GOOD + "on:\n  pricing_page_viewed:\n    - skip: [three]\n",
            "sequences/welcome.yaml:13:14: skip: no step 'three' in this sequence (steps: one, two)",
        ),
        (
            GOOD + "on:\n  demo_booked:\n    - enroll: demo-followup\n",
            "sequences/welcome.yaml:13:15: enroll: no sequence 'demo-followup' (sequences: welcome); add sequences/demo-followup.yaml",
        ),
        (
            GOOD.replace("    day: 3", "    day: 3\n    only_if: \"lead.phone and\""),
            "sequences/welcome.yaml:10:14: only_if: condition 'lead.phone and' does not parse",
        ),
        (
            GOOD.replace("id: two", "id: one"),
            "sequences/welcome.yaml:8:9: step id 'one' is used twice (also step 1)",
        ),
        (
            GOOD.replace("    day: 3\n", "    day: 0\n"),
            "sequences/welcome.yaml:9:10: day: Input should be greater than or equal to 1",
        ),
        (GOOD.replace("name: Welcome\n", ""), "sequences/welcome.yaml:1:1: missing required key 'name'"),
        (
            GOOD.replace("name: Welcome\n", "name: Welcome\nreenroll: never\n"),
            "sequences/welcome.yaml:2:1: 'reenroll' does not belong here: it goes under enroll:",
        ),
        (
            GOOD.replace("    day: 3", "    day: 7d"),
            "sequences/welcome.yaml:9:10: day: takes a whole number (day: 3 is Day 3); for a span write at: 7d or after: 7d",
        ),
        (
            GOOD.replace("    day: 3\n    email: welcome/one", "    day: 3\n    email: welcome/one.html.j2"),
            "sequences/welcome.yaml:10:12: email: write the template without its file ending: welcome/one",
        ),
        (
            GOOD.replace("    day: 3\n    email: welcome/one", "    day: 3\n    mail: welcome/one"),
            "sequences/welcome.yaml:8:5: a step needs exactly one of email, sms, whatsapp, crm_task, notify or variants; unknown key 'mail' (did you mean 'email'?)",
        ),
        (
            GOOD.replace("  on: signed_up", "  on: Signed Up"),
            "sequences/welcome.yaml:3:7: on: 'Signed Up' is not an event type",
        ),
    ],
)  # fmt: skip
def test_each_mistake_is_located_and_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str, expected: str
) -> None:
    code, output = validate(project(tmp_path, {"sequences/welcome.yaml": broken}), monkeypatch)
    assert code == 1
    assert expected in output, output
    assert "nothing was changed" in output


def test_every_error_of_every_file_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "sequences/a.yaml": GOOD.replace("    day: 3", "    dya: 3"),
        "sequences/b.yaml": GOOD.replace("    day: 1", "    day: x").replace(
            "email: welcome/one\n  - id: two", "email: nope\n  - id: two"
        ),
        "sequences/policy.yaml": "kind: policy\ncaps: {email: {per: 1d, max: two}}\n",
        "templates/welcome/two.html.j2": "---\nsubject: Hi\n---\n{% if %}\n",
    }
    root = project(tmp_path, files)
    (root / "sequences" / "c.yaml").write_text(GOOD.replace("welcome/one", "welcome/two"))
    code, output = validate(root, monkeypatch)
    assert code == 1
    lines = [line for line in output.splitlines() if ": " in line and line[0] != " "]
    assert any(line.startswith("sequences/a.yaml:9:5:") for line in lines), output
    assert any(line.startswith("sequences/b.yaml:6:10: day:") for line in lines), output
    assert any(line.startswith("sequences/policy.yaml:2:30: max:") for line in lines), output
    assert any(line.startswith("templates/welcome/two.html.j2:4:") for line in lines), output
    assert "4 problem(s)" in output


def test_a_folder_without_sequences_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = validate(project(tmp_path, {}), monkeypatch)
    assert code == 1
    assert "no sequence files" in output


def test_yaml_one_point_two_keeps_on_and_yes_as_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = GOOD.replace("  on: signed_up", "  on: [yes, no, on]").replace(
        "name: Welcome", "name: yes"
    )
    code, output = validate(project(tmp_path, {"sequences/welcome.yaml": text}), monkeypatch)
    assert code == 0, output


def test_unknown_kind_and_bad_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "sequences/Welcome Mail.yaml": GOOD,
        "sequences/x.yaml": "kind: campaign\nname: X\n",
    }
    code, output = validate(project(tmp_path, files), monkeypatch)
    assert code == 1
    assert (
        "sequences/Welcome Mail.yaml:1:1: file name 'Welcome Mail.yaml' is not a sequence id"
        in output
    )
    assert "sequences/x.yaml:1:7: unknown kind 'campaign'" in output  # fmt: skip
