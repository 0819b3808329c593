"""Sandboxed Jinja2 rendering of the email, SMS and WhatsApp templates under templates/."""

from __future__ import annotations

import copy
import difflib
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import html2text
from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.kit.errors import NurtureError

Channel = Literal["email", "sms", "whatsapp"]
SUFFIX: dict[Channel, str] = {"email": ".html.j2", "sms": ".sms.j2", "whatsapp": ".whatsapp.j2"}
TEXT_SUFFIX = ".txt.j2"
FRONT_MATTER_KEYS = ("subject", "preheader", "from", "reply_to", "transactional")
LEAD_FIELDS = (
    "email",
    "phone",
    "external_id",
    "first_name",
    "last_name",
    "timezone",
    "score",
    "segment",
    "consent",
    "attributes",
)
SAMPLE_UNSUBSCRIBE_URL = "https://example.com/u/sample"

_SAMPLE_LEAD: dict[str, Any] = {
    "email": "ana@example.com",
    "phone": "+4915112345678",
    "first_name": "Ana",
    "last_name": "Ito",
    "timezone": "Europe/Berlin",
    "score": 0,
    "segment": None,
    "attributes": {},
    "consent": {"email": True, "sms": True},
}
_FOOTER_HTML = (
    '<p style="margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;'
    'text-align:center">You are receiving this because you signed up for updates from us. '
    '<a href="{url}" style="color:#6b7280">Unsubscribe</a></p>'
)
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")
_INLINE_CACHE_SIZE = 512


@dataclass(frozen=True)
class TemplateProblem:
    """Something wrong with a template, at a 1-based position in its file."""

    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class RenderError(NurtureError):
    """A template could not be rendered; `.problem` says where and why."""

    def __init__(self, problem: TemplateProblem) -> None:
        # The problem is the only argument so the exception survives pickling (Celery results).
        super().__init__(problem)
        self.problem = problem

    def __str__(self) -> str:
        return str(self.problem)


@dataclass(frozen=True)
class RenderedEmail:
    """A fully rendered email, ready for the sender."""

    subject: str
    preheader: str | None
    from_address: str | None
    reply_to: str | None
    transactional: bool
    html: str
    text: str


@dataclass(frozen=True)
class _Origin:
    """Where a piece of Jinja source starts in its file, to map Jinja lines to file lines."""

    path: Path
    first_line: int

    def problem(self, lineno: int | None, message: str, column: int = 1) -> TemplateProblem:
        return TemplateProblem(
            self.path, self.first_line + max(lineno or 1, 1) - 1, column, message
        )


@dataclass(frozen=True)
class _Email:
    """The front matter of an email template, with subject and preheader compiled."""

    subject: Template
    subject_line: int
    preheader: Template | None
    from_address: str | None
    reply_to: str | None
    transactional: bool


@dataclass(frozen=True)
class _Source:
    """A template file as read from disk: its Jinja body and, for emails, its front matter."""

    stamp: tuple[int, int]
    body: str
    body_line: int
    email: _Email | None
    problems: tuple[TemplateProblem, ...]


@dataclass(frozen=True)
class _FrontMatter:
    """Front-matter values with the file (line, column) of each value."""

    values: dict[str, Any]
    positions: dict[str, tuple[int, int]]
    problems: list[TemplateProblem]


class _Loader(BaseLoader):
    """Serves template bodies, front matter removed, from the template root."""

    def __init__(self, root: Path, load: Callable[[Path], _Source]) -> None:
        self._root = root
        self._load = load

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = self._root.joinpath(*split_template_path(template))
        if not path.is_file():
            raise TemplateNotFound(template)
        source = self._load(path)
        return source.body, str(path), lambda: _stamp(path) == source.stamp


class Templates:
    """The template tree: resolves names, checks templates and renders them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._sources: dict[Path, _Source] = {}
        # Keyed by the filename Jinja puts in tracebacks and syntax errors.
        self._origins: dict[str, _Origin] = {}
        self._inline: dict[tuple[str, str], Template] = {}
        self._env = _environment(_Loader(self.root, self._source))

    def path(self, channel: Channel, name: str) -> Path:
        """The file for `channel: name`; ValueError for names that are not plain relative paths."""
        if channel not in SUFFIX:
            raise ValueError(f"unknown channel {channel!r}: use email, sms or whatsapp")
        parts = name.split("/")
        if "\\" in name or any(part in ("", ".", "..") for part in parts):
            raise ValueError(
                f"{name!r} is not a template name: write a path under templates/ like "
                "`trial/welcome`, without a suffix, `..` or a leading /"
            )
        return self.root / (name + SUFFIX[channel])

    def exists(self, channel: Channel, name: str) -> bool:
        """Whether the template file for `channel: name` exists."""
        try:
            return self.path(channel, name).is_file()
        except ValueError:
            return False

    def names(self) -> list[tuple[Channel, str]]:
        """Every template under the root; files in `_`- or `.`-prefixed folders are partials."""
        if not self.root.is_dir():
            return []
        found: list[tuple[Channel, str]] = []
        for file in self.root.rglob("*"):
            rel = file.relative_to(self.root).as_posix()
            if not file.is_file() or any(p.startswith(("_", ".")) for p in rel.split("/")):
                continue
            for channel, suffix in SUFFIX.items():
                if rel.endswith(suffix) and len(rel) > len(suffix):
                    found.append((channel, rel[: -len(suffix)]))
        return sorted(found)

    def check(self, channel: Channel, name: str) -> list[TemplateProblem]:
        """Every problem found without rendering: missing file, front matter, Jinja syntax."""
        try:
            path = self._existing(channel, name)
            problems = list(self._loaded(path).problems) if channel == "email" else []
        except RenderError as exc:
            return [exc.problem]
        parts = [(name + SUFFIX[channel], path)]
        text_path = self.root / (name + TEXT_SUFFIX)
        if channel == "email" and text_path.is_file():
            parts.append((name + TEXT_SUFFIX, text_path))
        for template_name, part_path in parts:
            try:
                with self._reporting(_Origin(part_path, 1)):
                    self._env.get_template(template_name)
            except RenderError as exc:
                problems.append(exc.problem)
        return problems

    def check_string(
        self, source: str, *, path: Path | None = None, line: int = 1
    ) -> list[TemplateProblem]:
        """Jinja syntax problems in an inline string found at `path:line` (e.g. a sequence file)."""
        try:
            self._compile_inline(source, _Origin(path or Path("<string>"), line))
        except RenderError as exc:
            return [exc.problem]
        return []

    def render_email(
        self, name: str, context: Mapping[str, Any], *, derive_text: bool = True
    ) -> RenderedEmail:
        """Render subject, preheader, HTML and text parts; all of it or RenderError.

        `derive_text=False` leaves a text part that would be derived from the HTML empty: the
        simulator needs to know the message renders, not its plain-text twin.
        """
        path = self._existing("email", name)
        origin = _Origin(path, 1)
        source = self._loaded(path)
        if source.problems or source.email is None:
            raise RenderError(source.problems[0])
        meta, values = source.email, dict(context)
        html = self._render_file(name + SUFFIX["email"], values, origin)
        subject = " ".join(self._render(meta.subject, values, origin).split())
        if not subject:
            raise RenderError(_Origin(path, meta.subject_line).problem(1, _EMPTY_SUBJECT))
        preheader = None
        if meta.preheader is not None:
            preheader = " ".join(self._render(meta.preheader, values, origin).split()) or None
        text = self._text_part(name, html, values, derive=derive_text)
        if not meta.transactional:
            url = _unsubscribe_url(values, origin)
            html, text = _with_html_footer(html, url), _with_text_footer(text, url)
        return RenderedEmail(
            subject, preheader, meta.from_address, meta.reply_to, meta.transactional, html, text
        )

    def render_text(self, channel: Channel, name: str, context: Mapping[str, Any]) -> str:
        """Render an SMS or WhatsApp template, stripped of surrounding whitespace."""
        if channel == "email":
            raise ValueError("render_text renders sms and whatsapp templates; use render_email")
        path = self._existing(channel, name)
        return self._render_file(name + SUFFIX[channel], dict(context), _Origin(path, 1)).strip()

    def render_string(
        self,
        source: str,
        context: Mapping[str, Any],
        *,
        path: Path | None = None,
        line: int = 1,
    ) -> str:
        """Render an inline string; `path` and `line` say where it came from for errors."""
        origin = _Origin(path or Path("<string>"), line)
        template = self._compile_inline(source, origin)
        return self._render(template, dict(context), origin)

    def _existing(self, channel: Channel, name: str) -> Path:
        """The path of an existing template, or RenderError saying what to fix."""
        try:
            path = self.path(channel, name)
        except ValueError as exc:
            raise RenderError(TemplateProblem(self.root / name, 1, 1, str(exc))) from exc
        if not path.is_file():
            raise RenderError(TemplateProblem(path, 1, 1, _missing_message(channel, name)))
        return path

    def _loaded(self, path: Path) -> _Source:
        """`_source`, with unreadable files reported as RenderError."""
        with self._reporting(_Origin(path, 1)):
            return self._source(path)

    def _source(self, path: Path) -> _Source:
        """The parsed file, re-read when it changed on disk."""
        stamp = _stamp(path)
        cached = self._sources.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        source = self._parse(path, stamp)
        self._sources[path] = source
        self._origins[str(path)] = _Origin(path, source.body_line)
        return source

    def _parse(self, path: Path, stamp: tuple[int, int]) -> _Source:
        """Split an email's front matter from its body; other files are all body."""
        text = _read(path)
        if not path.name.endswith(SUFFIX["email"]):
            return _Source(stamp, text, 1, None, ())
        try:
            yaml_text, body, body_line = _split_front_matter(path, text)
        except RenderError as exc:
            return _Source(stamp, text, 1, None, (exc.problem,))
        if yaml_text is None:
            return _Source(stamp, body, body_line, None, (_no_front_matter(path),))
        front = _front_matter(path, yaml_text)
        email, problems = self._email(path, front)
        return _Source(stamp, body, body_line, email, tuple(problems))

    def _email(
        self, path: Path, front: _FrontMatter
    ) -> tuple[_Email | None, list[TemplateProblem]]:
        """Validate front-matter values and compile the subject and preheader."""
        problems = list(front.problems)
        values = front.values
        templates: dict[str, Template | None] = {"subject": None, "preheader": None}
        for key in templates:
            if isinstance(values.get(key), str):
                line = front.positions[key][0]
                try:
                    templates[key] = self._compile_inline(values[key], _Origin(path, line))
                except RenderError as exc:
                    problems.append(exc.problem)
        subject = templates["subject"]
        if problems or subject is None:
            return None, problems
        return _Email(
            subject=subject,
            subject_line=front.positions["subject"][0],
            preheader=templates["preheader"],
            from_address=values.get("from"),
            reply_to=values.get("reply_to"),
            transactional=bool(values.get("transactional", False)),
        ), problems

    def _compile_inline(self, source: str, origin: _Origin) -> Template:
        """Compile a string template whose errors point at `origin`."""
        filename = f"{origin.path}#{origin.first_line}"
        cached = self._inline.get((filename, source))
        if cached is not None:
            return cached
        if len(self._inline) >= _INLINE_CACHE_SIZE:
            self._inline.clear()
        self._origins[filename] = origin
        with self._reporting(origin):
            code = self._env.compile(source, filename=filename)
        template = self._env.template_class.from_code(self._env, code, self._env.make_globals(None))
        self._inline[(filename, source)] = template
        return template

    def _text_part(self, name: str, html: str, values: dict[str, Any], *, derive: bool) -> str:
        """The .txt.j2 part when there is one, else text derived from the HTML."""
        text_path = self.root / (name + TEXT_SUFFIX)
        if text_path.is_file():
            return self._render_file(name + TEXT_SUFFIX, values, _Origin(text_path, 1)).strip()
        return _html_to_text(html) if derive else ""

    def _render_file(self, template_name: str, values: dict[str, Any], fallback: _Origin) -> str:
        with self._reporting(fallback):
            return self._env.get_template(template_name).render(values)

    def _render(self, template: Template, values: dict[str, Any], fallback: _Origin) -> str:
        with self._reporting(fallback):
            return template.render(values)

    @contextmanager
    def _reporting(self, fallback: _Origin) -> Iterator[None]:
        """Turn any failure inside the block into a RenderError located in a template file."""
        try:
            yield
        except RenderError:
            raise
        except Exception as exc:
            raise RenderError(self._locate(exc, fallback)) from exc

    def _locate(self, exc: Exception, fallback: _Origin) -> TemplateProblem:
        """The file line of a Jinja error, from the error or from the template frames."""
        if isinstance(exc, TemplateSyntaxError):
            origin = self._origins.get(exc.filename or "", fallback)
            return origin.problem(exc.lineno, _message(exc))
        # Jinja rewrites tracebacks so template frames carry the template filename and line.
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename in self._origins:
                return self._origins[frame.filename].problem(frame.lineno, _message(exc))
        return fallback.problem(1, _message(exc))


def sms_segments(body: str) -> int:
    """How many SMS parts `body` takes: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    if not body:
        return 0
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in body):
        return _parts([2 if char in _GSM_EXTENDED else 1 for char in body], 160, 153)
    return _parts([len(char.encode("utf-16-le")) // 2 for char in body], 70, 67)


def sample_context(
    lead: Mapping[str, Any] | None = None,
    *,
    sequence: str = "sample",
    step: str = "sample",
    now: datetime | None = None,
) -> dict[str, Any]:
    """A context for previews: the sample lead (Ana Ito) overridden by `lead`."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    return {
        "lead": _sample_lead(lead or {}),
        "event": {"type": "sample", "properties": {}, "occurred_at": moment},
        "sequence": {"id": sequence, "name": sequence},
        "step": {"id": step},
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE_URL,
        "now": moment,
    }


def render_preview(
    templates: Templates, channel: Channel, name: str, context: Mapping[str, Any]
) -> str:
    """A human-readable rendering of one template, for the CLI and reviews."""
    if channel == "email":
        return _email_preview(templates.render_email(name, context))
    body = templates.render_text(channel, name, context)
    if channel != "sms":
        return body
    count = sms_segments(body)
    return f"{body}\n\n({count} segment{'' if count == 1 else 's'})"


def _html_to_text(html: str) -> str:
    """A plain-text part derived from HTML: unwrapped lines, no images, layout tables flattened."""
    converter = html2text.HTML2Text()
    # Wrapping would break long tracking links; mail clients wrap plain text themselves.
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    return str(converter.handle(html)).strip()


_EMPTY_SUBJECT = "the subject rendered empty: give it text or a fallback with `| default('...')`"


def _environment(loader: BaseLoader) -> ImmutableSandboxedEnvironment:
    # Immutable: templates cannot change the lead or event the worker passes in.
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=_autoescape,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(SUFFIX["email"])


def _finalize(value: Any) -> Any:
    # A known-but-empty lead field should not print as "None" in a customer's inbox.
    return "" if value is None else value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's default(), which also replaces None: lead fields are often present but empty."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value


def _message(exc: Exception) -> str:
    """What went wrong and what to do, for a marketer reading the error."""
    if isinstance(exc, TemplateSyntaxError):
        return f"Jinja syntax error: {exc.message}"
    if isinstance(exc, UndefinedError):
        hint = "check the name, give a fallback with `| default('...')` or test `is defined`"
        return f"{exc.message}: {hint}"
    if isinstance(exc, SecurityError):
        reason = str(exc).rstrip(".")
        return f"blocked by the template sandbox: {reason}; templates may only read plain values"
    if isinstance(exc, TemplateNotFound):
        return f"included template {exc.name!r} not found: create it under templates/"
    return f"rendering failed: {type(exc).__name__}: {exc}"


def _missing_message(channel: Channel, name: str) -> str:
    suffix = SUFFIX[channel]
    for known in (*SUFFIX.values(), TEXT_SUFFIX):
        if name.endswith(known):
            return f"template not found: write `{channel}: {name[: -len(known)]}`, without {known}"
    return f"template not found: create {name}{suffix} or fix the name in `{channel}: {name}`"


def _no_front_matter(path: Path) -> TemplateProblem:
    return TemplateProblem(
        path, 1, 1, "email templates start with front matter: `---`, `subject: ...`, `---`"
    )


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _read(path: Path) -> str:
    """The file as text, or RenderError at the line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RenderError(
            TemplateProblem(path, line, 1, "the file is not UTF-8: save it as UTF-8")
        ) from exc


def _split_front_matter(path: Path, text: str) -> tuple[str | None, str, int]:
    """(front-matter YAML or None, body, file line where the body starts)."""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return None, text, 1
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return "\n".join(lines[1:index]) + "\n", "\n".join(lines[index + 1 :]), index + 2
    raise RenderError(
        TemplateProblem(path, 1, 1, "the front matter is not closed: add a `---` line after it")
    )


def _front_matter(path: Path, yaml_text: str) -> _FrontMatter:
    """Parse and check front-matter YAML (which starts on file line 2)."""
    try:
        data = YAML(typ="rt").load(yaml_text)
    except YAMLError as exc:
        return _FrontMatter({}, {}, [_yaml_problem(path, yaml_text, exc)])
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        message = "the front matter must be `key: value` lines, starting with `subject: ...`"
        return _FrontMatter({}, {}, [TemplateProblem(path, 2, 1, message)])
    positions = {str(key): _value_position(data, key, yaml_text) for key in data}
    problems = [_unknown_key(path, data, key) for key in data if key not in FRONT_MATTER_KEYS]
    # ruamel hands back str subclasses that carry YAML styling; keep plain values.
    values = {str(key): str(v) if isinstance(v, str) else v for key, v in data.items()}
    problems += _value_problems(path, values, positions)
    return _FrontMatter(values, positions, problems)


def _yaml_problem(path: Path, yaml_text: str, exc: Exception) -> TemplateProblem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not isinstance(exc, MarkedYAMLError) or mark is None:
        return TemplateProblem(path, 1, 1, f"the front matter is not valid YAML: {exc}")
    message = f"the front matter is not valid YAML: {exc.problem}"
    lines = yaml_text.split("\n")
    if "{{" in lines[min(mark.line, len(lines) - 1)]:
        message += '; quote values with {{ ... }} in them: subject: "Hi {{ lead.first_name }}"'
    return TemplateProblem(path, mark.line + 2, mark.column + 1, message)


def _value_position(data: Any, key: Any, yaml_text: str) -> tuple[int, int]:
    """File (line, column) where a value's text starts; block scalars start on the next line."""
    line, column = _mark(data, key, "value")
    text = yaml_text.split("\n")[line]
    if text[column : column + 1] in ("|", ">"):
        return line + 3, 1
    return line + 2, column + 1


def _mark(data: Any, key: Any, part: Literal["key", "value"]) -> tuple[int, int]:
    """0-based (line, column) of a key or value in the front-matter YAML."""
    try:
        line, column = data.lc.key(key) if part == "key" else data.lc.value(key)
    except KeyError:
        # Keys pulled in by a `<<:` merge have no position of their own.
        return 0, 0
    return int(line), int(column)


def _unknown_key(path: Path, data: Any, key: Any) -> TemplateProblem:
    line, column = _mark(data, key, "key")
    close = difflib.get_close_matches(str(key), FRONT_MATTER_KEYS, n=1)
    hint = f"did you mean `{close[0]}`?" if close else f"use {', '.join(FRONT_MATTER_KEYS)}"
    return TemplateProblem(path, line + 2, column + 1, f"unknown front-matter key `{key}`: {hint}")


def _value_problems(
    path: Path, values: dict[str, Any], positions: dict[str, tuple[int, int]]
) -> list[TemplateProblem]:
    """Type checks for the known front-matter keys, and the required subject."""
    problems = []
    if "subject" not in values:
        problems.append(
            TemplateProblem(path, 1, 1, "the front matter has no subject: add `subject: ...`")
        )
    for key in ("subject", "preheader", "from", "reply_to"):
        if key not in values or (key != "subject" and values[key] is None):
            continue
        message = _text_value_problem(key, values[key])
        if message:
            problems.append(TemplateProblem(path, *positions[key], message))
    if "transactional" in values and not isinstance(values["transactional"], bool):
        message = "`transactional` must be true or false"
        problems.append(TemplateProblem(path, *positions["transactional"], message))
    return problems


def _text_value_problem(key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"`{key}` is empty: give it text or remove the line"
    if not isinstance(value, str):
        return f'`{key}` must be text: put it in quotes, e.g. {key}: "..."'
    if key in ("from", "reply_to") and ("\n" in value or "\r" in value):
        return f"`{key}` must be a single line, like `Ana at Acme <ana@acme.example>`"
    return None


def _unsubscribe_url(values: Mapping[str, Any], origin: _Origin) -> str:
    url = values.get("unsubscribe_url")
    if isinstance(url, str) and url:
        return url
    message = "a marketing email needs `unsubscribe_url` in the context (or `transactional: true`)"
    raise RenderError(origin.problem(1, message))


def _with_html_footer(html: str, url: str) -> str:
    """Add the unsubscribe footer unless the HTML already carries the link."""
    escaped = str(escape(url))
    if url in html or escaped in html:
        return html
    footer = _FOOTER_HTML.format(url=escaped)
    at = html.lower().rfind("</body>")
    if at < 0:
        return f"{html.rstrip()}\n{footer}\n"
    return f"{html[:at]}{footer}\n{html[at:]}"


def _with_text_footer(text: str, url: str) -> str:
    if url in text:
        return text
    return f"{text}\n\nUnsubscribe: {url}" if text else f"Unsubscribe: {url}"


def _parts(sizes: list[int], single: int, part: int) -> int:
    """Count message parts, never splitting an escape pair or a surrogate pair across two."""
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


def _sample_lead(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The sample lead with `lead` on top; consent and attributes merge key by key."""
    given = copy.deepcopy(dict(lead))
    merged = {**dict.fromkeys(LEAD_FIELDS), **copy.deepcopy(_SAMPLE_LEAD), **given}
    for key in ("consent", "attributes"):
        if isinstance(given.get(key), Mapping):
            merged[key] = {**_SAMPLE_LEAD[key], **given[key]}
    return merged


def _email_preview(email: RenderedEmail) -> str:
    lines = [f"Subject: {email.subject}"]
    if email.preheader:
        lines.append(f"Preheader: {email.preheader}")
    if email.from_address:
        lines.append(f"From: {email.from_address}")
    if email.reply_to:
        lines.append(f"Reply-To: {email.reply_to}")
    lines += ["--- text ---", email.text, "--- html ---", email.html]
    return "\n".join(lines)
