"""Job templates made by users: the `Template` aggregate and its events, pure and without I/O.

A template is a job's fields kept under a name, to submit the same kind of job again: its
title, description, model routes, budget, attempts and priority. Templates are state, so every
one made, changed or deleted is an event in the store (a backup carries them, a replay rebuilds
their read model). The built-in templates are not: they are defined in code by the gateway, and a
user's template may not take one of their names.

What a template holds must make a valid job: it is checked by the job's own rules
(`Job.submit`), so the two can never disagree. Names are unique among the templates that are
not deleted; that needs the other templates, so the caller passes the names taken (and holds a
lock meanwhile, see the gateway), and the rule itself lives here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from vdo_kernel.domain import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DomainError, Job

# Lower case, so two templates cannot differ only by case; no UUID (an id is looked up first).
TEMPLATE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TEMPLATE_NAME_RULE: Final = (
    "1 to 64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter "
    "or a digit"
)
SUMMARY_MAX: Final = 500


class TemplateNameTakenError(DomainError):
    """Another template (or a built-in one) already has the name."""


def check_template_name(name: str) -> str:
    if not TEMPLATE_NAME.fullmatch(name):
        raise DomainError(f"a template's name is {TEMPLATE_NAME_RULE}")
    if is_uuid(name):
        raise DomainError("a template's name must not look like an id (a UUID)")
    return name


def is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TemplateFields:
    """What a template gives a job, and how it is shown. `max_attempts`, `budget_usd` and
    `priority` left as None leave the choice to the deployment's defaults when the job is
    submitted."""

    name: str
    title: str
    description: str
    summary: str = ""
    routes: dict[str, list[str]] = field(default_factory=dict)
    max_attempts: int | None = None
    budget_usd: float | None = None
    priority: int | None = None

    def checked(self) -> TemplateFields:
        """The fields, normalised, or a DomainError saying what is wrong."""
        check_template_name(self.name)
        summary = self.summary.strip()
        if len(summary) > SUMMARY_MAX:
            raise DomainError(f"summary is longer than {SUMMARY_MAX} characters")
        if "\x00" in summary or any(0xD800 <= ord(c) <= 0xDFFF for c in summary):
            raise DomainError("summary contains characters that are not valid text")
        # The job's own rules say whether these make a job.
        job = Job.submit(
            title=self.title,
            description=self.description,
            max_attempts=self.max_attempts or DEFAULT_MAX_ATTEMPTS,
            budget_usd=self.budget_usd if self.budget_usd is not None else 1.0,
            routes=self.routes,
            priority=self.priority if self.priority is not None else DEFAULT_PRIORITY,
        )
        return TemplateFields(
            name=self.name,
            title=job.title,
            description=self.description,
            summary=summary,
            routes={phase: list(chain) for phase, chain in job.routes.items()},
            max_attempts=self.max_attempts,
            budget_usd=float(self.budget_usd) if self.budget_usd is not None else None,
            priority=self.priority,
        )

    def event_fields(self) -> dict[str, Any]:
        return asdict(self)


class TemplateEvent(Aggregate.Event):
    """The envelope of every template event: as a job's (correlation and causation), and who
    did it (`by`: a user's name)."""

    correlation_id: str
    causation_id: str
    by: str


class Template(Aggregate):
    """A user's job template. Deleted templates keep their history; they are no longer listed
    and their name is free again."""

    class Event(TemplateEvent):
        pass

    class Created(Event, Aggregate.Created):
        name: str
        title: str
        description: str
        summary: str
        routes: dict[str, list[str]]
        max_attempts: int | None
        budget_usd: float | None
        priority: int | None
        # Where it was made from, if not by hand: a job's id, or a template's id or name.
        from_job: str | None
        from_template: str | None

    class Updated(Event):
        """The template as it now is (every field, changed or not)."""

        name: str
        title: str
        description: str
        summary: str
        routes: dict[str, list[str]]
        max_attempts: int | None
        budget_usd: float | None
        priority: int | None

        def apply(self, aggregate: Aggregate) -> None:
            template = _template(aggregate)
            template.fields = TemplateFields(
                name=self.name,
                title=self.title,
                description=self.description,
                summary=self.summary,
                routes={phase: list(chain) for phase, chain in self.routes.items()},
                max_attempts=self.max_attempts,
                budget_usd=self.budget_usd,
                priority=self.priority,
            )
            template.updated_by = self.by

    class Deleted(Event):
        def apply(self, aggregate: Aggregate) -> None:
            template = _template(aggregate)
            template.deleted = True
            template.updated_by = self.by

    def __init__(
        self,
        name: str,
        title: str,
        description: str,
        summary: str,
        routes: dict[str, list[str]],
        max_attempts: int | None,
        budget_usd: float | None,
        priority: int | None,
        from_job: str | None,
        from_template: str | None,
        correlation_id: str,
        causation_id: str,
        by: str,
    ) -> None:
        self.fields = TemplateFields(
            name=name,
            title=title,
            description=description,
            summary=summary,
            routes={phase: list(chain) for phase, chain in routes.items()},
            max_attempts=max_attempts,
            budget_usd=budget_usd,
            priority=priority,
        )
        self.from_job = from_job
        self.from_template = from_template
        self.created_by = by
        self.updated_by = by
        self.deleted = False

    @property
    def name(self) -> str:
        return self.fields.name

    @classmethod
    def create(
        cls,
        fields: TemplateFields,
        *,
        by: str,
        taken: Collection[str],
        from_job: str | None = None,
        from_template: str | None = None,
        template_id: UUID | None = None,
    ) -> Template:
        """A new template. `taken`: the names of the other templates (and the built-in ones)."""
        fields = fields.checked()
        if fields.name in taken:
            raise TemplateNameTakenError(f"a template named {fields.name!r} exists already")
        aggregate_id = template_id or uuid4()
        correlation = str(aggregate_id)
        return cls._create(
            cls.Created,
            id=aggregate_id,
            **fields.event_fields(),
            from_job=from_job,
            from_template=from_template,
            by=by,
            correlation_id=correlation,
            causation_id=correlation,
        )

    def update(self, fields: TemplateFields, *, by: str, taken: Collection[str]) -> bool:
        """Change the template to `fields`; False (and no event) when nothing would change.
        `taken`: the names of the other templates (and the built-in ones)."""
        self._require_live()
        fields = fields.checked()
        if fields == self.fields:
            return False
        if fields.name != self.name and fields.name in taken:
            raise TemplateNameTakenError(f"a template named {fields.name!r} exists already")
        self.trigger_event(
            self.Updated,
            **fields.event_fields(),
            by=by,
            correlation_id=str(self.id),
            causation_id=str(self.id),
        )
        return True

    def delete(self, *, by: str) -> None:
        self._require_live()
        self.trigger_event(
            self.Deleted, by=by, correlation_id=str(self.id), causation_id=str(self.id)
        )

    def _require_live(self) -> None:
        if self.deleted:
            raise DomainError(f"template {self.name!r} was deleted")


def _template(aggregate: Aggregate) -> Template:
    assert isinstance(aggregate, Template)
    return aggregate


TEMPLATE_EVENT_TYPES: dict[str, type[TemplateEvent]] = {
    "TemplateCreated": Template.Created,
    "TemplateUpdated": Template.Updated,
    "TemplateDeleted": Template.Deleted,
}
TEMPLATE_EVENT_NAMES: dict[type[TemplateEvent], str] = {
    cls: name for name, cls in TEMPLATE_EVENT_TYPES.items()
}


def is_template_event(event_type: str) -> bool:
    return event_type in TEMPLATE_EVENT_TYPES
