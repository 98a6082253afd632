"""Templates in the read models: made, changed, renamed and deleted, event by event and in a
bulk replay, to the same rows; never in the jobs' timeline."""

from __future__ import annotations

from uuid import uuid4

import psycopg

from vdo_kernel import readmodels
from vdo_kernel.domain import Job
from vdo_kernel.store import JobStore
from vdo_kernel.templates import Template, TemplateFields
from vdo_projector.projection import Projection, checksums, rebuild


def fields(name: str, **changes: object) -> TemplateFields:
    base = TemplateFields(
        name=name,
        title="todo API",
        description="a FastAPI todo API with SQLite and tests",
        summary="tab\tand é 🚀",
        routes={"tester": ["openai:gpt-4.1"]},
        max_attempts=2,
        budget_usd=0.3,
        priority=0,
    )
    return TemplateFields(**{**base.__dict__, **changes})


def test_templates_project_to_their_table_and_replay_the_same(
    database_url: str, store: JobStore
) -> None:
    kept = Template.create(fields("kept"), by="ada", taken=(), from_job=str(uuid4()))
    gone = Template.create(fields("gone", max_attempts=None, budget_usd=None), by="bob", taken=())
    store.save(kept, gone)
    job = Job.submit(title="between", description="a job among the templates")
    store.save(job)
    kept.update(fields("renamed", summary="", priority=None), by="bob", taken=())
    gone.delete(by="admin")
    store.save(kept, gone)
    copy = Template.create(fields("gone"), by="ada", taken=(), from_template="kept")
    store.save(copy)

    projection = Projection(database_url, store, batch_size=2)
    try:
        assert projection.catch_up() == store.max_position()
    finally:
        projection.close()
    with psycopg.connect(database_url) as conn:
        rows, total = readmodels.list_templates(conn, limit=10, offset=0)
        assert total == 2
        assert [(r.name, r.id, r.created_by, r.updated_by, r.version) for r in rows] == [
            ("gone", copy.id, "ada", "ada", 1),
            ("renamed", kept.id, "ada", "bob", 2),
        ]
        renamed = rows[1]
        assert (renamed.summary, renamed.priority, renamed.max_attempts) == ("", None, 2)
        assert renamed.routes == {"tester": ["openai:gpt-4.1"]}
        assert renamed.from_job == kept.from_job
        assert rows[0].from_template == "kept"
        assert readmodels.template_names(conn) == {"gone": copy.id, "renamed": kept.id}
        timeline = conn.execute("SELECT DISTINCT job_id FROM vdo_read.timeline").fetchall()
        assert timeline == [(job.id,)]

    live = checksums(database_url)
    assert "templates" in live
    assert rebuild(database_url).checksums == live
