"""Templates: the built-in ones and the users' own, to submit the same kind of job again
(`POST /api/jobs` with ``template``).

Every user may read every template (the library is shared). Members and admins make templates,
by hand, from a job they may see, or as a copy of another template (a built-in one, say); a
member changes and deletes only their own, an admin any. Built-in templates are read only.

Changes are events (`vdo_kernel.templates`) appended to the store and answered from the
aggregate just saved; lists come from the read model (waiting a moment for the projector when
it has not reached the latest template event yet, so a template just made is in the next list).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vdo_gateway.auth import ActorDep, Principal, PrincipalDep
from vdo_gateway.deps import MAX_POSITION, POOL_WAIT_SECONDS, ReadDbDep, ResourcesDep, StoreDep
from vdo_gateway.models import ErrorPublic, JobCreate, Routes
from vdo_gateway.resources import Resources
from vdo_gateway.templates import (
    BuiltinTemplateError,
    Found,
    TemplateLibrary,
    TemplateNotFoundError,
    job_defaults,
)
from vdo_kernel import readmodels
from vdo_kernel.domain import (
    DESCRIPTION_MAX,
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TITLE_MAX,
)
from vdo_kernel.store import TEMPLATE_TOPICS, ConcurrencyError, JobNotFoundError, JobStore
from vdo_kernel.templates import SUMMARY_MAX, Template, TemplateFields, TemplateNameTakenError

router = APIRouter(prefix="/templates", tags=["templates"])

# How long a list waits for the projector to reach the latest template event.
PROJECTION_WAIT_SECONDS: Final = 3.0
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,63}$"
REF_MAX: Final = 200

TemplateName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="1 to 64 characters: lower-case letters, digits, '.', '_' or '-', starting "
        "with a letter or a digit; unique, and not a built-in template's",
        examples=["my-todo-api"],
    ),
]
TemplateRef = Annotated[
    str,
    Path(
        max_length=REF_MAX,
        description="the template's id (a UUID), or its name (a built-in one's: todo-api, say)",
        examples=["todo-api"],
    ),
]
Title = Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
Description = Annotated[str, Field(min_length=1, max_length=DESCRIPTION_MAX)]
Summary = Annotated[
    str,
    Field(max_length=SUMMARY_MAX, description="what the template is for, shown in the library"),
]
MaxAttempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)]
Budget = Annotated[
    float,
    Field(
        description="USD, more than 0 and at most 10000",
        json_schema_extra={"exclusiveMinimum": 0, "maximum": 10_000},
    ),
]
Priority = Annotated[
    int,
    Field(ge=PRIORITY_MIN, le=PRIORITY_MAX, description="the job's place in the queue"),
]

NOT_FOUND: Final = {"model": ErrorPublic, "description": "no such template"}
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorPublic, "description": "malformed JSON"},
    403: {"model": ErrorPublic, "description": "a viewer, or another member's template"},
    404: {"model": ErrorPublic, "description": "no such template (or job to make it from)"},
    409: {
        "model": ErrorPublic,
        "description": "the name is taken, the template is built in, or it changed meanwhile",
    },
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}


class _Text(BaseModel):
    @field_validator("title", "description", "summary", check_fields=False)
    @classmethod
    def _storable_text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class TemplateCreate(_Text):
    """A new template: by hand (``title`` and ``description`` at least), from a job
    (``from_job``: its title, description, routes, budget, attempts and priority as submitted),
    or as a copy of another template (``from_template``); fields given override the source's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: TemplateName
    from_job: Annotated[
        UUID | None, Field(strict=False, description="make it from this job (one you may see)")
    ] = None
    from_template: Annotated[
        str | None,
        Field(
            max_length=REF_MAX,
            description="copy this template (its id or name; a built-in one's too)",
            examples=["todo-api"],
        ),
    ] = None
    title: Title | None = None
    description: Description | None = None
    summary: Summary | None = None
    routes: Annotated[
        Routes | None, Field(description="the models of the AI phases, as for a job")
    ] = None
    max_attempts: MaxAttempts | None = None
    budget_usd: Budget | None = None
    priority: Priority | None = None


class TemplateUpdate(_Text):
    """The template as it is to be (every field: one left out takes its default)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: TemplateName
    title: Title
    description: Description
    summary: Summary = ""
    routes: Annotated[
        Routes, Field(description="the models of the AI phases, as for a job; {}: the defaults")
    ] = Field(default_factory=dict)
    max_attempts: Annotated[
        MaxAttempts | None, Field(description="none: the deployment's default")
    ] = None
    budget_usd: Annotated[Budget | None, Field(description="none: the deployment's default")] = None
    priority: Annotated[Priority | None, Field(description="none: the default priority")] = None


class TemplatePublic(BaseModel):
    id: str = Field(description="a user's template: its UUID; a built-in one: its name")
    name: str
    builtin: bool = Field(description="defined by VDO: read only (copy it to change it)")
    title: str
    description: str
    summary: str
    routes: dict[str, list[str]] = Field(
        description="the models of the AI phases a job gets; a phase not listed uses the "
        "deployment's defaults"
    )
    max_attempts: int | None = Field(description="none: the deployment's default")
    budget_usd: float | None = Field(description="none: the deployment's default")
    priority: int | None = Field(description="none: the default priority")
    scripted: bool | None = Field(
        description="built-in templates: whether the built-in scripted model does the job (it "
        "then runs with no model configured); none for users' templates"
    )
    from_job: str | None = Field(description="the job it was made from, if any")
    from_template: str | None = Field(description="the template it was copied from, if any")
    created_by: str | None
    created_at: datetime | None
    updated_by: str | None
    updated_at: datetime | None
    version: int | None = Field(description="the number of the template's last event")
    source: Literal["builtin", "read_model", "store"] = Field(
        description="where the answer comes from: the code (built-in), the read model (in "
        "lists) or the store (one template)"
    )

    @classmethod
    def of(cls, found: Found) -> TemplatePublic:
        fields = found.fields
        common: dict[str, Any] = {
            "id": found.id,
            "name": fields.name,
            "title": fields.title,
            "description": fields.description,
            "summary": fields.summary,
            "routes": fields.routes,
            "max_attempts": fields.max_attempts,
            "budget_usd": fields.budget_usd,
            "priority": fields.priority,
        }
        if found.builtin is not None:
            return cls(
                **common,
                builtin=True,
                scripted=found.builtin.scripted,
                from_job=None,
                from_template=None,
                created_by=None,
                created_at=None,
                updated_by=None,
                updated_at=None,
                version=None,
                source="builtin",
            )
        if found.row is not None:
            row = found.row
            return cls(
                **common,
                builtin=False,
                scripted=None,
                from_job=row.from_job,
                from_template=row.from_template,
                created_by=row.created_by,
                created_at=row.created_at,
                updated_by=row.updated_by,
                updated_at=row.updated_at,
                version=row.version,
                source="read_model",
            )
        template = found.aggregate
        assert template is not None
        return cls(
            **common,
            builtin=False,
            scripted=None,
            from_job=template.from_job,
            from_template=template.from_template,
            created_by=template.created_by,
            created_at=template.created_on,
            updated_by=template.updated_by,
            updated_at=template.modified_on,
            version=template.version,
            source="store",
        )


class TemplatesPage(BaseModel):
    items: list[TemplatePublic] = Field(description="the built-in templates first, then by name")
    total: int
    limit: int
    offset: int


@router.get("")
async def list_templates(
    principal: PrincipalDep,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    builtin: Annotated[
        bool | None,
        Query(description="true: only the built-in templates; false: only the users'"),
    ] = None,
) -> TemplatesPage:
    """The template library, a page at a time: the built-in templates, then the users' (every
    user sees every template)."""
    deadline = time.monotonic() + PROJECTION_WAIT_SECONDS
    stored = await asyncio.to_thread(resources.store.max_position)
    while True:
        current, (found, total) = await asyncio.to_thread(
            _page, resources, stored, limit, offset, builtin
        )
        if current or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return TemplatesPage(
        items=[TemplatePublic.of(f) for f in found], total=total, limit=limit, offset=offset
    )


@router.get("/{ref}", responses={404: NOT_FOUND})
def get_template(
    ref: TemplateRef, principal: PrincipalDep, db: ReadDbDep, store: StoreDep
) -> TemplatePublic:
    """One template, by id or by name."""
    with _answering():
        return TemplatePublic.of(TemplateLibrary(store, db).find(ref))


@router.post("", status_code=status.HTTP_201_CREATED, responses=ERRORS)
def create_template(
    body: TemplateCreate,
    principal: ActorDep,
    db: ReadDbDep,
    store: StoreDep,
    response: Response,
) -> TemplatePublic:
    """Make a template: by hand, from a job (``from_job``) or as a copy of another template
    (``from_template``). Its fields must make a valid job."""
    library = TemplateLibrary(store, db)
    with _answering():
        if body.from_job is not None and body.from_template is not None:
            raise HTTPException(status_code=422, detail="give from_job or from_template, not both")
        base: TemplateFields | None = None
        source: Found | None = None
        if body.from_job is not None:
            base = _from_job(store, principal, body.from_job)
        elif body.from_template is not None:
            source = library.find(body.from_template)
            base = source.fields
        elif body.title is None or body.description is None:
            raise HTTPException(
                status_code=422,
                detail="title and description are required for a template made by hand (or "
                "give from_job or from_template to start from a job or another template)",
            )
        fields = _merged(base, body)
        with library.writing():
            template = Template.create(
                fields,
                by=principal.name,
                taken=library.taken(),
                from_job=str(body.from_job) if body.from_job is not None else None,
                # By id (a built-in one's is its name): a copy's source is not lost to a rename.
                from_template=source.id if source is not None else None,
            )
            store.save(template)
    response.headers["Location"] = f"/api/templates/{template.id}"
    return TemplatePublic.of(Found(aggregate=template))


@router.put("/{ref}", responses=ERRORS)
def update_template(
    ref: TemplateRef,
    body: TemplateUpdate,
    principal: ActorDep,
    db: ReadDbDep,
    store: StoreDep,
) -> TemplatePublic:
    """Replace a template's fields (its name too). A member changes only their own templates;
    built-in ones are read only (copy one to change it)."""
    library = TemplateLibrary(store, db)
    fields = TemplateFields(
        name=body.name,
        title=body.title,
        description=body.description,
        summary=body.summary,
        routes={str(phase): list(chain) for phase, chain in body.routes.items()},
        max_attempts=body.max_attempts,
        budget_usd=body.budget_usd,
        priority=body.priority,
    )
    with _answering(), library.writing():
        template = library.load(ref)
        _require_maker(principal, template)
        if template.update(fields, by=principal.name, taken=library.taken(but=template.id)):
            store.save(template)
    return TemplatePublic.of(Found(aggregate=template))


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_template(ref: TemplateRef, principal: ActorDep, db: ReadDbDep, store: StoreDep) -> None:
    """Delete a template (its history stays in the log; its name is free again). A member
    deletes only their own; built-in templates cannot be deleted."""
    library = TemplateLibrary(store, db)
    with _answering(), library.writing():
        template = library.load(ref)
        _require_maker(principal, template)
        template.delete(by=principal.name)
        store.save(template)


# ---- helpers -----------------------------------------------------------------------------


@contextmanager
def _answering() -> Iterator[None]:
    """The library's refusals as the API's answers."""
    try:
        yield
    except TemplateNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except (BuiltinTemplateError, TemplateNameTakenError) as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    except ConcurrencyError:
        raise HTTPException(
            status_code=409, detail="the template was changed meanwhile; read it and try again"
        ) from None


def _require_maker(principal: Principal, template: Template) -> None:
    if not principal.is_admin and template.created_by != principal.name:
        raise HTTPException(
            status_code=403,
            detail=f"template {template.name!r} is {template.created_by}'s: only they or an "
            "admin may change or delete it (copy it with from_template to have your own)",
        )


def _from_job(store: JobStore, principal: Principal, job_id: UUID) -> TemplateFields:
    """A job's fields as submitted (a job the caller may not see is, to them, not there)."""
    events = store.job_events(job_id)
    if not events or events[0].type != "JobSubmitted":
        raise JobNotFoundError(str(job_id))
    data = events[0].data
    if not principal.may_see_job(str(data.get("submitted_by", ""))):
        raise JobNotFoundError(str(job_id))
    priority = data.get("priority")
    return TemplateFields(
        name="",
        title=str(data["title"]),
        description=str(data["description"]),
        routes={str(p): [str(r) for r in chain] for p, chain in dict(data["routes"]).items()},
        max_attempts=int(data["max_attempts"]),
        budget_usd=float(data["budget_usd"]),
        priority=int(priority) if priority is not None else None,
    )


def _merged(base: TemplateFields | None, body: TemplateCreate) -> TemplateFields:
    """The source's fields (a job's, another template's), with the request's on top."""
    given = body.model_fields_set

    def pick(name: str, default: Any) -> Any:
        value = getattr(body, name)
        if name in given and (value is not None or name not in ("title", "description")):
            return value
        return getattr(base, name) if base is not None else default

    routes = pick("routes", {}) or {}
    return TemplateFields(
        name=body.name,
        title=pick("title", ""),
        description=pick("description", ""),
        summary=pick("summary", "") or "",
        routes={str(phase): list(chain) for phase, chain in routes.items()},
        max_attempts=pick("max_attempts", None),
        budget_usd=pick("budget_usd", None),
        priority=pick("priority", None),
    )


def _page(
    resources: Resources, stored: int, limit: int, offset: int, builtin: bool | None
) -> tuple[bool, tuple[list[Found], int]]:
    """One page, and whether the read model held every template event stored at ``stored``."""
    with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
        resources.require_current_read_models(conn)
        projected = readmodels.projector_position(conn)
        current = projected >= stored or not resources.store.has_events_with_topics(
            TEMPLATE_TOPICS, projected, stored
        )
        # After the position: the rows are at least as recent as it.
        library = TemplateLibrary(resources.store, conn)
        return current, library.page(limit=limit, offset=offset, builtin=builtin)


# ---- submitting a job from a template ------------------------------------------------------


def with_template(body: JobCreate, resources: Resources) -> JobCreate:
    """The submission with what it leaves out filled in from the template it names (routes
    merged by phase, the request's first); its title and description are set from here on.
    404 for a template that is not there, 422 for a title or description missing."""
    if body.template is not None:
        with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            resources.require_current_read_models(conn)
            with _answering():
                found = TemplateLibrary(resources.store, conn).find(body.template)
        defaults = job_defaults(found)
        changes: dict[str, Any] = {
            name: value
            for name, value in defaults.items()
            if name in JobCreate.model_fields and getattr(body, name) is None
        }
        if "routes" in defaults:
            changes["routes"] = {**defaults["routes"], **(body.routes or {})}
        body = body.model_copy(update=changes)
    for name in ("title", "description"):
        if getattr(body, name) is None:
            raise HTTPException(
                status_code=422,
                detail=f"field '{name}' is required (or name a template that gives it: "
                "GET /api/templates lists them)",
            )
    return body
