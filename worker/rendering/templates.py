"""The template tree under templates/: finds, checks and renders email, SMS and WhatsApp
templates in the Jinja2 sandbox, every failure located at its file and line."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import BaseLoader, Environment, Template, TemplateNotFound, TemplateSyntaxError
from jinja2.loaders import split_template_path

from worker.kit.problems import Problem
from worker.rendering import sandbox
from worker.rendering.errors import RenderError
from worker.rendering.footers import unsubscribe_url, with_html_footer, with_text_footer
from worker.rendering.front_matter import (
    FrontMatter,
    no_front_matter,
    read_front_matter,
    split_front_matter,
)
from worker.rendering.text import html_to_text

Channel = Literal["email", "sms", "whatsapp"]
SUFFIX: dict[Channel, str] = {"email": ".html.j2", "sms": ".sms.j2", "whatsapp": ".whatsapp.j2"}
TEXT_SUFFIX = ".txt.j2"
_INLINE_CACHE_SIZE = 512
_EMPTY_SUBJECT = "the subject rendered empty: give it text or a fallback with `| default('...')`"


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

    def problem(self, lineno: int | None, message: str, column: int = 1) -> Problem:
        return Problem(self.path, self.first_line + max(lineno or 1, 1) - 1, column, message)


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
    problems: tuple[Problem, ...]


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
        self._env = sandbox.environment(_Loader(self.root, self._source), _autoescape)

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

    def check(self, channel: Channel, name: str) -> list[Problem]:
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
    ) -> list[Problem]:
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
            url = unsubscribe_url(values, path)
            html, text = with_html_footer(html, url), with_text_footer(text, url)
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
            raise RenderError(Problem(self.root / name, 1, 1, str(exc))) from exc
        if not path.is_file():
            raise RenderError(Problem(path, 1, 1, _missing_message(channel, name)))
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
            yaml_text, body, body_line = split_front_matter(path, text)
        except RenderError as exc:
            return _Source(stamp, text, 1, None, (exc.problem,))
        if yaml_text is None:
            return _Source(stamp, body, body_line, None, (no_front_matter(path),))
        front = read_front_matter(path, yaml_text)
        email, problems = self._email(path, front)
        return _Source(stamp, body, body_line, email, tuple(problems))

    def _email(self, path: Path, front: FrontMatter) -> tuple[_Email | None, list[Problem]]:
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
        return html_to_text(html) if derive else ""

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

    def _locate(self, exc: Exception, fallback: _Origin) -> Problem:
        """The file line of a Jinja error, from the error or from the template frames."""
        if isinstance(exc, TemplateSyntaxError):
            origin = self._origins.get(exc.filename or "", fallback)
            return origin.problem(exc.lineno, sandbox.explain(exc))
        # Jinja rewrites tracebacks so template frames carry the template filename and line.
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename in self._origins:
                return self._origins[frame.filename].problem(frame.lineno, sandbox.explain(exc))
        return fallback.problem(1, sandbox.explain(exc))


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(SUFFIX["email"])


def _missing_message(channel: Channel, name: str) -> str:
    suffix = SUFFIX[channel]
    for known in (*SUFFIX.values(), TEXT_SUFFIX):
        if name.endswith(known):
            return f"template not found: write `{channel}: {name[: -len(known)]}`, without {known}"
    return f"template not found: create {name}{suffix} or fix the name in `{channel}: {name}`"


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
            Problem(path, line, 1, "the file is not UTF-8: save it as UTF-8")
        ) from exc
