"""Sequences and templates the tests share: the small projects many tests write to tmp_path
(`make_runtime`, `write_project`) before they start. A test whose YAML or template differs in
a way that matters keeps its own beside it."""

from __future__ import annotations

EMAIL = (
    "---\nsubject: \"{{ step.id }} for {{ lead.first_name | default('you') }}\"\n---\n<p>Hi</p>\n"
)
"""The email `make_catalog` writes for each of the templates t/a … t/d (the engine tests)."""

WELCOME = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: later, day: 3, email: w/hello}
"""
"""Sign up, then the w/hello email on day 1 (`hello`) and again on day 3 (`later`)."""

WELCOME_DAY_ONE = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
"""
"""Sign up, then the w/hello email on day 1 (`hello`), and nothing after it."""

TRIAL = """
name: Trial
enroll: {on: trial_started}
exit_on: [subscription_upgraded]
steps:
  - {id: welcome, day: 1, email: t/welcome}
  - {id: tour, day: 3, email: t/welcome}
"""
"""A trial: the t/welcome email on day 1 (`welcome`) and day 3 (`tour`) until the upgrade."""


def exiting_on(sequence: str, *events: str) -> str:
    """`sequence` (one without `exit_on:`) left on any of `events`."""
    assert "exit_on:" not in sequence
    return sequence.replace("\nsteps:\n", f"\nexit_on: [{', '.join(events)}]\nsteps:\n", 1)


def unsubscribe_template(subject: str) -> str:
    """An email with a plain `subject` and nothing but the unsubscribe link in its body."""
    return (
        '---\nsubject: "' + subject + '"\n---\n'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    )


def greeting_template(greeting: str) -> str:
    """An email to `<greeting> Ana` (`<greeting> there` without a first name): "Hi!" and the
    unsubscribe link."""
    return (
        '---\nsubject: "' + greeting + " {{ lead.first_name | default('there') }}\"\n---\n"
        '<p>Hi! <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    )


def welcome_project(sequence: str, template: str) -> dict[str, str]:
    """The files of a project with one sequence, sequences/welcome.yaml, whose emails are the
    template w/hello."""
    return {"sequences/welcome.yaml": sequence, "templates/w/hello.html.j2": template}
