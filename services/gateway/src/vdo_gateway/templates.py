"""The template library: the built-in templates (defined here, in code) and the users' own (the
`Template` aggregate in the store, listed from the ``templates`` read model), found by id or by
name (from the store, so a template just changed is found as it now is), and what a job
submission takes from one.

Built-in templates are not state: they are the same on every deployment, read only, and listed
first. A user's template may not take a built-in's name, and names are unique among the users'
templates, so a name always finds one template. Uniqueness needs every other template's name:
`TemplateLibrary.names` gives them from the read model when it holds every template event
stored, else (it lags) from the store itself; writers hold `WRITE_LOCK` meanwhile, so two
gateways cannot both take a name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final
from uuid import UUID

import psycopg

from vdo_kernel import readmodels
from vdo_kernel.domain import AI_PHASES
from vdo_kernel.store import TEMPLATE_TOPICS, JobStore
from vdo_kernel.templates import TEMPLATE_NAME, Template, TemplateFields, is_uuid

# The advisory lock every template writer holds (across gateways) while it checks names and
# appends.
WRITE_LOCK: Final = "vdo-templates"
# A reference to a template is shown cut to this many characters in an error.
REF_SHOWN: Final = 64


@dataclass(frozen=True)
class BuiltinTemplate:
    fields: TemplateFields
    # Whether the built-in scripted model does this job (so it runs with no model configured).
    scripted: bool


_NEEDS_A_MODEL = " Needs a configured model (the built-in scripted model only does the demo jobs)."

_BUILTINS: Final[tuple[BuiltinTemplate, ...]] = (
    BuiltinTemplate(
        TemplateFields(
            name="todo-api",
            title="FastAPI todo API",
            description=(
                "A FastAPI todo API with SQLite and tests: create, list, update and delete todo "
                "items kept in a SQLite database, with tests for every endpoint."
            ),
            summary="Demo job: a small REST API with a database, and its tests. The built-in "
            "scripted model does it, so it runs without any API key.",
        ),
        scripted=True,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="word-count",
            title="Command-line word-count tool",
            description=(
                "A command-line word-count tool: count the lines, words and characters of the "
                "files it is given (or of its standard input), like wc, with tests."
            ),
            summary="Demo job: a small command-line program and its tests. The built-in "
            "scripted model does it, so it runs without any API key.",
        ),
        scripted=True,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="csv-summary",
            title="CSV summary script",
            description=(
                "A CSV summary script: read a CSV file and print a summary of each column (how "
                "many values, how many are missing, and the minimum, maximum and mean of "
                "numbers), with tests."
            ),
            summary="Demo job: a data script and its tests. The built-in scripted model does "
            "it, so it runs without any API key.",
        ),
        scripted=True,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="repair-loop-demo",
            title="Word count, showing the repair loop",
            description=(
                "A command-line word-count tool with tests, to show the repair loop: the first "
                "attempt has a bug, its tests fail, and the failure goes back to the builder as "
                "feedback for the second attempt."
            ),
            summary="Demo job that takes two attempts: the tests of the first fail, the second "
            "repairs it. Runs on the built-in scripted model.",
            max_attempts=3,
        ),
        scripted=True,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="review-loop-demo",
            title="Todo API, showing the review loop",
            description=(
                "A FastAPI todo API with SQLite and tests, to show the review loop: the review "
                "of the first attempt asks for a change, and the second attempt makes it."
            ),
            summary="Demo job that takes two attempts: the reviewer sends the first back with "
            "a comment, the second applies it. Runs on the built-in scripted model.",
            max_attempts=3,
        ),
        scripted=True,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="json-api",
            title="Small JSON API",
            description=(
                "A small JSON API with FastAPI: one resource with create, read, update, delete "
                "and list endpoints, input validated with pydantic models, clear error answers "
                "(404, 422), data kept behind a repository class (in memory for now, so a "
                "database can be added later), and pytest tests using FastAPI's TestClient."
            ),
            summary="A starting point for a web service: CRUD endpoints, validation and tests."
            + _NEEDS_A_MODEL,
        ),
        scripted=False,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="argparse-cli",
            title="CLI tool with argparse and tests",
            description=(
                "A Python command-line tool built on argparse: subcommands, --help text for "
                "every option, clear error messages and exit codes (0 on success, 2 on bad "
                "usage), its logic in plain functions apart from the argument parsing, and "
                "unittest tests for both the logic and the command line."
            ),
            summary="A starting point for a command-line program with a proper interface."
            + _NEEDS_A_MODEL,
        ),
        scripted=False,
    ),
    BuiltinTemplate(
        TemplateFields(
            name="python-package",
            title="Small Python package with tests",
            description=(
                "A small, typed Python package in a src layout with a pyproject.toml: a "
                "documented public API, a README with usage examples, and pytest tests "
                "covering the public functions, including their error cases."
            ),
            summary="A starting point for a reusable library." + _NEEDS_A_MODEL,
        ),
        scripted=False,
    ),
)
# The demo templates run on the built-in scripted model even where a provider has a key, so a
# demo costs nothing; a model chosen for a phase at submission still wins (routes merge by phase).
DEMO_ROUTES: Final[dict[str, list[str]]] = {phase: ["scripted:demo"] for phase in AI_PHASES}
BUILTIN_TEMPLATES: Final[tuple[BuiltinTemplate, ...]] = tuple(
    BuiltinTemplate(replace(t.fields, routes=DEMO_ROUTES), t.scripted) if t.scripted else t
    for t in _BUILTINS
)
BUILTINS: Final[dict[str, BuiltinTemplate]] = {t.fields.name: t for t in BUILTIN_TEMPLATES}


class TemplateNotFoundError(LookupError):
    """No template has that id or name (or its reference is neither); the message says so."""


class BuiltinTemplateError(Exception):
    """A built-in template cannot be changed or deleted."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"template {name!r} is built in and cannot be changed or deleted; make your own "
            f'copy and change that: POST /api/templates with {{"from_template": "{name}", '
            '"name": "<a new name>"}'
        )


def shown(ref: str) -> str:
    return ref if len(ref) <= REF_SHOWN else ref[: REF_SHOWN - 1] + "…"


def check_reference(ref: str) -> UUID | str:
    """A template's id (a UUID) or its name; TemplateNotFoundError for what can be neither."""
    if is_uuid(ref):
        return UUID(ref)
    if TEMPLATE_NAME.fullmatch(ref):
        return ref
    raise TemplateNotFoundError(
        f"no template {shown(ref)!r}: a template is named by its id (a UUID) or by its name "
        "(lower-case letters, digits, '.', '_' or '-')"
    )


@dataclass(frozen=True)
class Found:
    """One template as the API shows it: a built-in one, a read-model row (in a list), or the
    aggregate from the store."""

    builtin: BuiltinTemplate | None = None
    row: readmodels.TemplateRow | None = None
    aggregate: Template | None = None

    @property
    def fields(self) -> TemplateFields:
        if self.builtin is not None:
            return self.builtin.fields
        if self.row is not None:
            row = self.row
            return TemplateFields(
                name=row.name,
                title=row.title,
                description=row.description,
                summary=row.summary,
                routes=row.routes,
                max_attempts=row.max_attempts,
                budget_usd=row.budget_usd,
                priority=row.priority,
            )
        assert self.aggregate is not None
        return self.aggregate.fields

    @property
    def id(self) -> str:
        if self.builtin is not None:
            return self.builtin.fields.name
        if self.row is not None:
            return str(self.row.id)
        assert self.aggregate is not None
        return str(self.aggregate.id)


class TemplateLibrary:
    """The templates as one request sees them: the built-in ones, the read model, the store."""

    def __init__(self, store: JobStore, conn: psycopg.Connection[Any]) -> None:
        self.store = store
        self.conn = conn

    def page(
        self, *, limit: int, offset: int, builtin: bool | None = None
    ) -> tuple[list[Found], int]:
        """One page of the templates (only the built-in ones, or only the users', when asked)
        and how many there are: the built-in ones first (in the order above), then the users'
        by name."""
        builtins = BUILTIN_TEMPLATES if builtin is not False else ()
        items = [Found(builtin=t) for t in builtins[offset : offset + limit]]
        if builtin is True:
            return items, len(builtins)
        rows, users = readmodels.list_templates(
            self.conn, limit=limit - len(items), offset=max(0, offset - len(builtins))
        )
        return items + [Found(row=row) for row in rows], len(builtins) + users

    def find(self, ref: str) -> Found:
        """A template by id or name; TemplateNotFoundError when there is none."""
        key = check_reference(ref)
        if isinstance(key, str):
            if key in BUILTINS:
                return Found(builtin=BUILTINS[key])
            template_id = self.names().get(key)
            if template_id is None:
                raise TemplateNotFoundError(f"no template named {key!r}")
            key = template_id
        # From the store: a template's history is a few events, and so it is current the
        # moment it is changed (the read model, which lists them, may be a moment behind).
        template = self.store.get_template(key)
        if template is None or template.deleted:
            raise TemplateNotFoundError(f"no template {str(key)!r}")
        return Found(aggregate=template)

    def load(self, ref: str) -> Template:
        """A user's template, to change it: BuiltinTemplateError for a built-in one,
        TemplateNotFoundError when there is none."""
        found = self.find(ref)
        if found.builtin is not None:
            raise BuiltinTemplateError(found.builtin.fields.name)
        assert found.aggregate is not None
        return found.aggregate

    def names(self) -> dict[str, UUID]:
        """Every user's template's name, with its id: from the read model when it holds every
        template event stored, else from the store."""
        stored = self.store.max_position()
        projected = readmodels.projector_position(self.conn)
        if projected >= stored or not self.store.has_events_with_topics(
            TEMPLATE_TOPICS, projected, stored
        ):
            return readmodels.template_names(self.conn)
        templates: dict[UUID, Template | None] = {}
        for stored_event in self.store.events_with_topics(TEMPLATE_TOPICS):
            before = templates.get(stored_event.job_id)
            templates[stored_event.job_id] = stored_event.event.mutate(before)
        return {
            t.name: t.id for t in templates.values() if isinstance(t, Template) and not t.deleted
        }

    def taken(self, *, but: UUID | None = None) -> set[str]:
        """The names a template may not take: the built-ins', and the users' templates' but
        one (the template being changed)."""
        return set(BUILTINS) | {name for name, tid in self.names().items() if tid != but}

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the templates' write lock (one writer at a time, across gateways)."""
        with self.store.exclusive(WRITE_LOCK):
            yield


def job_defaults(found: Found) -> dict[str, Any]:
    """What a template gives a job submission (the fields it leaves unset are left out)."""
    fields = found.fields
    given: dict[str, Any] = {
        "title": fields.title,
        "description": fields.description,
        "max_attempts": fields.max_attempts,
        "budget_usd": fields.budget_usd,
        "priority": fields.priority,
    }
    defaults = {name: value for name, value in given.items() if value is not None}
    if fields.routes:
        defaults["routes"] = {phase: list(chain) for phase, chain in fields.routes.items()}
    return defaults
