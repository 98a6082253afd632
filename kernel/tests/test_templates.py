"""The Template aggregate's rules: what a template may hold, unique names, changes and deletion
as events (and none for a change that changes nothing)."""

from __future__ import annotations

import pytest

from vdo_kernel.domain import DomainError
from vdo_kernel.templates import (
    TEMPLATE_EVENT_NAMES,
    Template,
    TemplateFields,
    TemplateNameTakenError,
    check_template_name,
)

FIELDS = TemplateFields(
    name="todo",
    title="  todo API  ",
    description="a FastAPI todo API with SQLite and tests",
    summary=" a demo ",
    routes={"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"]},
    max_attempts=2,
    budget_usd=3,
    priority=7,
)


def event_names(template: Template) -> list[str]:
    return [TEMPLATE_EVENT_NAMES[type(e)] for e in template.collect_events()]  # type: ignore[index]


def test_a_template_is_created_with_its_fields_checked_and_normalised() -> None:
    template = Template.create(FIELDS, by="ada", taken={"other"}, from_job="j-1")
    assert template.fields == TemplateFields(
        name="todo",
        title="todo API",
        description=FIELDS.description,
        summary="a demo",
        routes=FIELDS.routes,
        max_attempts=2,
        budget_usd=3.0,
        priority=7,
    )
    assert (template.created_by, template.from_job, template.from_template) == ("ada", "j-1", None)
    assert not template.deleted
    assert event_names(template) == ["TemplateCreated"]


def test_defaults_left_out_stay_out() -> None:
    fields = TemplateFields(name="t", title="t", description="d")
    template = Template.create(fields, by="ada", taken=())
    assert template.fields.max_attempts is None
    assert template.fields.budget_usd is None
    assert template.fields.priority is None
    assert template.fields.routes == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Todo"}, "a template's name is"),
        ({"name": "-x"}, "a template's name is"),
        ({"name": "x" * 65}, "a template's name is"),
        ({"name": "../x"}, "a template's name is"),
        ({"name": "9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f"}, "must not look like an id"),
        ({"title": "  "}, "title must not be empty"),
        ({"description": ""}, "description must not be empty"),
        ({"summary": "x" * 501}, "summary is longer than 500"),
        ({"summary": "a\x00b"}, "summary contains characters"),
        ({"max_attempts": 11}, "max_attempts must be between 1 and 10"),
        ({"budget_usd": 0.0}, "budget_usd must be more than 0"),
        ({"priority": 10}, "priority must be an integer from 0 to 9"),
        ({"routes": {"painter": ["openai:x"]}}, "'painter' is not one of"),
        ({"routes": {"planner": []}}, "routes.planner must list 1 to 5"),
    ],
)
def test_a_template_must_make_a_valid_job(changes: dict[str, object], message: str) -> None:
    fields = TemplateFields(**{**FIELDS.__dict__, **changes})
    with pytest.raises(DomainError, match=message):
        Template.create(fields, by="ada", taken=())


def test_names_are_unique() -> None:
    with pytest.raises(TemplateNameTakenError, match="'todo' exists already"):
        Template.create(FIELDS, by="ada", taken={"todo"})
    assert check_template_name("a.b_c-9") == "a.b_c-9"


def test_an_update_is_one_event_with_every_field_and_none_when_nothing_changes() -> None:
    template = Template.create(FIELDS, by="ada", taken=())
    template.collect_events()
    assert not template.update(FIELDS, by="bob", taken=())
    assert event_names(template) == []

    renamed = TemplateFields(name="todo-2", title="todo API", description="another")
    with pytest.raises(TemplateNameTakenError):
        template.update(renamed, by="bob", taken={"todo-2"})
    # Its own name is not "taken" by itself.
    assert template.update(
        TemplateFields(name="todo", title="t", description="d"), by="bob", taken={"todo"}
    )
    assert template.update(renamed, by="bob", taken={"other"})
    assert template.fields == renamed
    assert template.updated_by == "bob"
    assert event_names(template) == ["TemplateUpdated", "TemplateUpdated"]


def test_a_deleted_template_cannot_be_changed_or_deleted_again() -> None:
    template = Template.create(FIELDS, by="ada", taken=())
    template.delete(by="admin")
    assert template.deleted
    with pytest.raises(DomainError, match="was deleted"):
        template.update(FIELDS, by="ada", taken=())
    with pytest.raises(DomainError, match="was deleted"):
        template.delete(by="ada")
    assert event_names(template) == ["TemplateCreated", "TemplateDeleted"]
