"""Load a `sequences/` folder as one catalog, all or nothing, with every problem at once.

Beyond each file's own shape this checks what spans files: unique ids, steps that `skip:`
names, sequences that `enroll:` names, templates that exist and parse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError

from worker.definitions import models
from worker.definitions.loader import Located, build, parse_yaml
from worker.definitions.models import Policy, Scoring, Sequence
from worker.kit.problems import Problem
from worker.rendering.errors import RenderError
from worker.rendering.samples import sample_context
from worker.rendering.templates import Templates
from worker.rendering.text import sms_segments

KINDS: dict[str, type[Sequence] | type[Scoring] | type[Policy]] = {
    "sequence": Sequence,
    "scoring": Scoring,
    "policy": Policy,
}
_SYNTAX = Environment()
MAX_SMS_SEGMENTS = 10
"""Longer texts cost more than they are worth and carriers may drop them (issue 5)."""


@dataclass(frozen=True)
class SequenceDef:
    id: str
    model: Sequence
    path: str
    version: str

    def step_index(self, step_id: str) -> int | None:
        return next((i for i, s in enumerate(self.model.steps) if s.id == step_id), None)

    def one_off(self, send_id: str) -> models.OneOffSend | None:
        for reactions in self.model.on.values():
            for reaction in reactions:
                if isinstance(reaction, models.SendReaction) and reaction.send.id == send_id:
                    return reaction.send
        return None


@dataclass(frozen=True)
class Catalog:
    sequences: dict[str, SequenceDef] = field(default_factory=dict)
    scoring: Scoring | None = None
    policy: Policy = field(default_factory=lambda: Policy(kind="policy"))
    templates: Templates | None = None

    def sequence(self, sequence_id: str) -> SequenceDef | None:
        return self.sequences.get(sequence_id)


def sequence_files(folder: Path) -> list[Path]:
    """The YAML files of a sequences folder (not its subfolders: `tests/` lives there)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_catalog(
    sequences_dir: Path, templates_dir: Path, *, display_root: Path | None = None
) -> tuple[Catalog, list[Problem]]:
    """Every file read and checked; the catalog is only good when the problem list is empty."""
    root = display_root or Path.cwd()
    problems: list[Problem] = []
    if not sequences_dir.is_dir():
        return Catalog(), [Problem(sequences_dir, 1, 1, "no such folder of sequences")]
    templates = Templates(templates_dir)
    sequences: dict[str, SequenceDef] = {}
    located_by_id: dict[str, Located] = {}
    scoring: tuple[Scoring, Located] | None = None
    policy: Policy | None = None
    for path in sequence_files(sequences_dir):
        display = _display(path, root)
        located, found = parse_yaml(path, display)
        problems.extend(found)
        if located is None:
            continue
        kind = located.tree.get("kind", "sequence")
        model_type = KINDS.get(kind) if isinstance(kind, str) else None
        if model_type is None:
            problems.append(
                located.problem(["kind"], f"unknown kind {kind!r}: use sequence, scoring or policy")
            )
            continue
        model, found = build(model_type, located)
        problems.extend(found)
        if isinstance(model, Sequence):
            sequence_id = model.id or path.stem
            if not models.SEQUENCE_ID.match(sequence_id):
                problems.append(
                    Problem(
                        Path(display),
                        1,
                        1,
                        f"file name {path.name!r} is not a sequence id: rename it with lower-case "
                        "letters, digits and '-', or set id:",
                    )
                )
                continue
            if sequence_id in sequences:
                problems.append(
                    located.problem(
                        ["id"] if model.id else [],
                        f"sequence id {sequence_id!r} is already used by "
                        f"{sequences[sequence_id].path}",
                    )
                )
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            sequences[sequence_id] = SequenceDef(sequence_id, model, display, digest)
            located_by_id[sequence_id] = located
        elif isinstance(model, Scoring):
            if scoring is not None:
                problems.append(located.problem(["kind"], "only one scoring file is allowed"))
            scoring = (model, located)
        elif isinstance(model, Policy):
            if policy is not None:
                problems.append(located.problem(["kind"], "only one policy file is allowed"))
            policy = model
    for sequence_id, definition in sequences.items():
        problems.extend(_check_sequence(definition, located_by_id[sequence_id], sequences))
    if scoring is not None:
        problems.extend(_check_scoring(*scoring, sequences))
    uses = _template_uses(sequences, located_by_id, scoring)
    problems.extend(_check_templates(uses, templates, root))
    catalog = Catalog(
        sequences=sequences,
        scoring=scoring[0] if scoring else None,
        policy=policy or Policy(kind="policy"),
        templates=templates,
    )
    return catalog, sorted(set(problems))


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _check_sequence(
    definition: SequenceDef, located: Located, sequences: dict[str, SequenceDef]
) -> Iterator[Problem]:
    model = definition.model
    seen: dict[str, int] = {}
    for index, step in enumerate(model.steps):
        if not models.STEP_ID.match(step.id):
            yield located.problem(
                ["steps", index, "id"],
                f"step id {step.id!r}: use letters, digits, '-' or '_'",
            )
        if step.id in seen:
            yield located.problem(
                ["steps", index, "id"],
                f"step id {step.id!r} is used twice (also step {seen[step.id] + 1}); "
                "step ids must be unique in a sequence",
            )
        seen[step.id] = index
        if isinstance(step, models.CrmTaskStep):
            yield from _check_inline(located, ["steps", index, "crm_task"], step.crm_task)
    for event_type, reactions in model.on.items():
        for index, reaction in enumerate(reactions):
            loc: list[str | int] = ["on", event_type, index]
            if isinstance(reaction, models.SendReaction):
                send_id = reaction.send.id
                if send_id in seen:
                    yield located.problem(
                        [*loc, "send", "id"],
                        f"send id {send_id!r} is already a step id; give the one-off its own id",
                    )
                seen[send_id] = -1
                if reaction.send.crm_task:
                    yield from _check_inline(
                        located, [*loc, "send", "crm_task"], reaction.send.crm_task
                    )
            elif isinstance(reaction, models.SkipReaction):
                for position, step_id in enumerate(reaction.skip):
                    if definition.step_index(step_id) is None:
                        known = ", ".join(s.id for s in model.steps)
                        yield located.problem(
                            [*loc, "skip", position],
                            f"skip: no step {step_id!r} in this sequence (steps: {known})",
                        )
            elif isinstance(reaction, models.EnrollReaction):
                yield from _check_enroll_target(
                    located, [*loc, "enroll"], reaction.enroll, sequences
                )
            elif isinstance(reaction, models.CrmTaskReaction):
                yield from _check_inline(located, [*loc, "crm_task"], reaction.crm_task)


def _check_enroll_target(
    located: Located, loc: list[str | int], target: str, sequences: dict[str, SequenceDef]
) -> Iterator[Problem]:
    if target not in sequences:
        known = ", ".join(sorted(sequences)) or "none"
        yield located.problem(
            loc, f"enroll: no sequence {target!r} (sequences: {known}); add sequences/{target}.yaml"
        )


def _check_inline(
    located: Located, loc: list[str | int], task: models.CrmTask
) -> Iterator[Problem]:
    for name in ("subject", "body"):
        text = getattr(task, name)
        if text is None:
            continue
        try:
            _SYNTAX.parse(text)
        except TemplateSyntaxError as exc:
            yield located.problem([*loc, name], f"{name}: template does not parse: {exc.message}")


def _check_scoring(
    scoring: Scoring, located: Located, sequences: dict[str, SequenceDef]
) -> Iterator[Problem]:
    for segment, actions in scoring.on_segment.items():
        if segment not in scoring.segments:
            known = ", ".join(scoring.segments) or "none"
            yield located.problem(
                ["on_segment", segment],
                f"on_segment: no segment {segment!r} under segments: (segments: {known})",
                key=True,
            )
        for index, action in enumerate(actions):
            if isinstance(action, models.EnrollReaction):
                yield from _check_enroll_target(
                    located, ["on_segment", segment, index, "enroll"], action.enroll, sequences
                )


Use = tuple[str, str, Located, list[str | int]]
"""(channel, template name, the file that names it, where in that file)."""


def _template_uses(
    sequences: dict[str, SequenceDef],
    located_by_id: dict[str, Located],
    scoring: tuple[Scoring, Located] | None,
) -> Iterator[Use]:
    """Every template the files name, with the place that names it."""
    for sequence_id, definition in sequences.items():
        located = located_by_id[sequence_id]
        for index, step in enumerate(definition.model.steps):
            yield from _channel_templates(step, located, ["steps", index])
        for event_type, reactions in definition.model.on.items():
            for index, reaction in enumerate(reactions):
                loc: list[str | int] = ["on", event_type, index]
                if isinstance(reaction, models.SendReaction):
                    yield from _channel_templates(reaction.send, located, [*loc, "send"])
                elif isinstance(reaction, models.NotifyReaction):
                    yield "email", reaction.notify.template, located, [*loc, "notify", "template"]
    if scoring is not None:
        model, located = scoring
        for segment, actions in model.on_segment.items():
            for index, action in enumerate(actions):
                if isinstance(action, models.NotifyReaction):
                    where: list[str | int] = ["on_segment", segment, index, "notify", "template"]
                    yield "email", action.notify.template, located, where


def _channel_templates(holder: Any, located: Located, loc: list[str | int]) -> Iterator[Use]:
    if isinstance(holder, models.VariantsStep):
        sources = [(v, [*loc, "variants", i]) for i, v in enumerate(holder.variants)]
    else:
        sources = [(holder, loc)]
    for source, where in sources:
        for channel in models.MESSAGE_CHANNELS:
            value = getattr(source, channel, None)
            if isinstance(value, str):
                yield channel, value, located, [*where, channel]
        notify = getattr(source, "notify", None)
        if notify is not None:
            yield "email", notify.template, located, [*where, "notify", "template"]


def _check_templates(uses: Iterator[Use], templates: Templates, root: Path) -> Iterator[Problem]:
    """A missing template at the line that names it; a broken one at its own line."""
    checked: set[tuple[str, str]] = set()
    for channel, name, located, loc in uses:
        path = templates.path(channel, name)  # type: ignore[arg-type]
        if not path.exists():
            yield located.problem(
                loc, f"{channel}: no template {name!r}: create {_display(path, root)}"
            )
            continue
        if (channel, name) in checked:
            continue
        checked.add((channel, name))
        found = templates.check(channel, name)  # type: ignore[arg-type]
        for problem in found:
            yield replace(problem, path=Path(_display(problem.path, root)))
        if channel == "sms" and not found:
            yield from _check_sms_length(templates, name, located, loc, root)


def _check_sms_length(
    templates: Templates, name: str, located: Located, loc: list[str | int], root: Path
) -> Iterator[Problem]:
    """An SMS over MAX_SMS_SEGMENTS parts for the sample lead, at the line that names it."""
    try:
        body = templates.render_text("sms", name, sample_context())
    except RenderError:
        return  # it needs a real lead's data: whether that renders is the send's to say
    count = sms_segments(body)
    if count > MAX_SMS_SEGMENTS:
        path = _display(templates.path("sms", name), root)
        yield located.problem(
            loc,
            f"sms: {path} is {count} SMS segments for the sample lead; at most "
            f"{MAX_SMS_SEGMENTS} are allowed: shorten it",
        )
