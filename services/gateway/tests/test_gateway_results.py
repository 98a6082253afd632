"""A job's results, log and the stats through the API on a real PostgreSQL and JetStream, from
histories written straight into the store with real blobs: each attempt's file tree, one file,
the zip, the diff between attempts, the log by phase, and hostile paths, unknown attempts and
other people's jobs answered with a clear 4xx."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from services.gateway.tests.apps import (
    Attempt,
    RanJob,
    add_user,
    client,
    run_job,
    running_app,
    sha256,
)

from vdo_gateway.artifacts import zip_time
from vdo_kernel.accounts import Role
from vdo_kernel.blobs import BlobStore
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection

BUGGY = b"def count(text):\n    return len(text.split()) + 1\n"
FIXED = b"def count(text):\n    return len(text.split())\n"
TESTS = b"import unittest\nfrom wc import count\n\nclass T(unittest.TestCase):\n    pass\n"
BINARY = bytes(range(256))
FIRST = Attempt(
    files={"wc.py": BUGGY, "README.md": b"# wc\n", "old.txt": b"gone later"},
    tests={"tests/test_wc.py": TESTS},
    output="F.\nFAIL: test_count\nRan 2 tests\nFAILED (failures=1)\n",
    tests_pass=False,
    reply="here is wc.py, with a bug",
)
SECOND = Attempt(
    files={"wc.py": FIXED, "README.md": b"# wc\n", "data/logo.bin": BINARY, 'we"ird é.txt': b"x"},
    tests={"tests/test_wc.py": TESTS + b"# more\n"},
    output="..\nRan 2 tests\nOK\n",
    reply="fixed",
)


@pytest.fixture
def settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, nats_url=nats_url, home=tmp_path)


@pytest.fixture
def blobs(settings: Settings) -> BlobStore:
    return BlobStore(settings.blobs_dir)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as running:
        yield running


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as api:
        yield api


@pytest.fixture
def repaired(store: JobStore, blobs: BlobStore) -> RanJob:
    """A job whose first attempt's tests fail and whose second's pass."""
    return run_job(store, blobs, [FIRST, SECOND])


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


async def get_json(api: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_each_attempts_files_are_listed_with_the_step_that_wrote_them(
    admin: httpx.AsyncClient, repaired: RanJob
) -> None:
    tree = await get_json(admin, f"/api/jobs/{repaired.id}/artifacts")
    assert (tree["attempt"], tree["attempts"], tree["steps"]) == (2, 2, ["build", "write_tests"])
    expected = {**SECOND.files, **SECOND.tests}
    assert [f["path"] for f in tree["items"]] == sorted(expected)
    for item in tree["items"]:
        content = expected[item["path"]]
        assert (item["size"], item["sha256"]) == (len(content), sha256(content))
        assert item["step"] == ("write_tests" if item["path"].startswith("tests/") else "build")
        assert item["attempt"] == 2
    assert tree["total"] == len(expected)
    assert tree["total_bytes"] == sum(len(c) for c in expected.values())

    first = await get_json(admin, f"/api/jobs/{repaired.id}/artifacts", attempt=1)
    assert [f["path"] for f in first["items"]] == sorted({**FIRST.files, **FIRST.tests})
    page = await get_json(admin, f"/api/jobs/{repaired.id}/artifacts", limit=2, offset=1)
    assert [f["path"] for f in page["items"]] == [f["path"] for f in tree["items"]][1:3]
    assert page["total"] == tree["total"]


async def test_one_file_is_served_as_text_or_as_bytes_with_a_safe_name(
    admin: httpx.AsyncClient, repaired: RanJob
) -> None:
    path = f"/api/jobs/{repaired.id}/artifacts/file"
    response = await admin.get(path, params={"path": "wc.py"})
    assert response.status_code == 200
    assert response.content == FIXED
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"].startswith('inline; filename="wc.py"')
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"] == f'"{sha256(FIXED)}"'
    old = await admin.get(path, params={"path": "wc.py", "attempt": 1})
    assert old.content == BUGGY

    binary = await admin.get(path, params={"path": "data/logo.bin"})
    assert binary.content == BINARY
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.headers["content-disposition"].startswith('attachment; filename="logo.bin"')

    odd = await admin.get(path, params={"path": 'we"ird é.txt'})
    assert odd.status_code == 200
    disposition = odd.headers["content-disposition"]
    assert disposition == (
        "inline; filename=\"we_ird__.txt\"; filename*=UTF-8''we%22ird%20%C3%A9.txt"
    )


HOSTILE_PATHS = [
    ("../etc/passwd", 400, "the path leaves the project"),
    ("tests/../wc.py", 400, "the path leaves the project"),
    ("./wc.py", 400, "not normalised"),
    ("tests//test_wc.py", 400, "not normalised"),
    ("/etc/passwd", 400, "the path is absolute"),
    ("~/.ssh/id_rsa", 400, "absolute"),
    ("C:/x", 400, "not a relative POSIX path"),
    ("tests\\test_wc.py", 400, "not a relative POSIX path"),
    ("wc.py\x00.txt", 400, "control characters"),
    ("x" * 256, 400, "longer than 255"),
    ("", 400, "the path is empty"),
    ("nope.py", 404, "attempt 2 has no file 'nope.py'"),
    ("tests", 404, "has no file 'tests'"),
]


@pytest.mark.parametrize(("bad", "status", "message"), HOSTILE_PATHS)
async def test_hostile_paths_are_refused_and_read_nothing(
    admin: httpx.AsyncClient, repaired: RanJob, bad: str, status: int, message: str
) -> None:
    response = await admin.get(f"/api/jobs/{repaired.id}/artifacts/file", params={"path": bad})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


async def test_unknown_jobs_attempts_and_ids_are_clear_4xx(
    admin: httpx.AsyncClient, repaired: RanJob, store: JobStore, blobs: BlobStore
) -> None:
    base = f"/api/jobs/{repaired.id}"
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (f"{base}/artifacts", {"attempt": 3}, 404, "has no attempt 3 (it has had attempts 1 to 2)"),
        (f"{base}/artifacts", {"attempt": 0}, 422, "query parameter 'attempt'"),
        (f"{base}/artifacts", {"attempt": "last"}, 422, "query parameter 'attempt'"),
        (f"{base}/artifacts", {"limit": 1001}, 422, "query parameter 'limit'"),
        (f"{base}/artifacts.zip", {"attempt": 9}, 404, "has no attempt 9"),
        (f"{base}/artifacts/file", {}, 422, "query parameter 'path' is required"),
        (f"{base}/diff", {"from": 3, "to": 1}, 404, "has no attempt 3"),
        (f"{base}/diff", {"to": 1}, 404, "nothing to compare it with"),
        (f"{base}/logs", {"phase": "dancing"}, 422, "query parameter 'phase'"),
        (f"{base}/logs", {"include": "secrets"}, 422, "query parameter 'include"),
        ("/api/jobs/not-a-uuid/artifacts", {}, 422, "path parameter 'job_id'"),
        ("/api/jobs/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f/artifacts", {}, 404, "not found"),
        ("/api/jobs/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f/logs", {}, 404, "not found"),
        ("/api/jobs/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f/diff", {}, 404, "not found"),
    ]
    for path, params, status, message in cases:
        response = await admin.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert message in response.json()["detail"], (path, params)

    # A job with no build yet has no files.
    fresh = run_job(store, blobs, [])
    for path in ("artifacts", "artifacts.zip", "diff"):
        response = await admin.get(f"/api/jobs/{fresh.id}/{path}")
        assert response.status_code == 404
        assert "no files yet" in response.json()["detail"]


async def test_the_zip_holds_the_result_the_same_every_time(
    admin: httpx.AsyncClient, repaired: RanJob, store: JobStore
) -> None:
    response = await admin.get(f"/api/jobs/{repaired.id}/artifacts.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="vdo-{str(repaired.id)[:8]}-attempt-2.zip"; '
        f"filename*=UTF-8''vdo-{str(repaired.id)[:8]}-attempt-2.zip"
    )
    expected = {**SECOND.files, **SECOND.tests}
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == sorted(expected)
        for name, content in expected.items():
            assert archive.read(name) == content
        finished = {
            e.data["step"]: e.timestamp
            for e in store.job_events(repaired.id)
            if e.type == "StepFinished" and e.data["attempt"] == 2
        }
        assert archive.getinfo("wc.py").date_time == zip_time(finished["build"])
        assert archive.getinfo("tests/test_wc.py").date_time == zip_time(finished["write_tests"])
        assert finished["build"].timetuple()[:5] == zip_time(finished["build"])[:5]
    again = await admin.get(f"/api/jobs/{repaired.id}/artifacts.zip")
    assert again.content == response.content

    first = await admin.get(f"/api/jobs/{repaired.id}/artifacts.zip", params={"attempt": 1})
    with zipfile.ZipFile(io.BytesIO(first.content)) as archive:
        assert archive.read("wc.py") == BUGGY


async def test_the_diff_between_attempts_shows_each_changed_file(
    admin: httpx.AsyncClient, repaired: RanJob
) -> None:
    diff = await get_json(admin, f"/api/jobs/{repaired.id}/diff")
    assert (diff["from_attempt"], diff["to_attempt"]) == (1, 2)
    assert (diff["added"], diff["removed"], diff["modified"], diff["unchanged"]) == (2, 1, 2, 1)
    by_path = {d["path"]: d for d in diff["items"]}
    assert set(by_path) == {"wc.py", "old.txt", "data/logo.bin", 'we"ird é.txt', "tests/test_wc.py"}
    code = by_path["wc.py"]
    assert code["change"] == "modified"
    assert code["diff"].startswith("--- a/wc.py\n+++ b/wc.py\n@@")
    assert "-    return len(text.split()) + 1\n+    return len(text.split())\n" in code["diff"]
    assert (code["lines_added"], code["lines_removed"]) == (1, 1)
    assert (code["from_sha256"], code["to_sha256"]) == (sha256(BUGGY), sha256(FIXED))
    gone = by_path["old.txt"]
    assert (gone["change"], gone["to_sha256"]) == ("removed", None)
    assert gone["diff"] == "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone later\n" + (
        "\\ No newline at end of file\n"
    )
    logo = by_path["data/logo.bin"]
    assert (logo["change"], logo["binary"], logo["diff"]) == ("added", True, None)

    same = await get_json(admin, f"/api/jobs/{repaired.id}/diff", **{"from": 2, "to": 2})
    assert (same["total"], same["unchanged"]) == (0, len({**SECOND.files, **SECOND.tests}))
    backwards = await get_json(admin, f"/api/jobs/{repaired.id}/diff", **{"from": 2, "to": 1})
    assert backwards["added"] == 1
    page = await get_json(admin, f"/api/jobs/{repaired.id}/diff", limit=2, offset=2)
    assert [d["path"] for d in page["items"]] == [d["path"] for d in diff["items"]][2:4]


async def test_the_log_reads_back_by_phase_with_outputs_and_replies(
    admin: httpx.AsyncClient, repaired: RanJob
) -> None:
    logs = f"/api/jobs/{repaired.id}/logs"
    everything = await get_json(admin, logs)
    items = everything["items"]
    assert everything["total"] == len(items)
    assert items[0]["text"].startswith("submitted by admin: word count")
    assert items[0]["phase"] is None
    assert items[-1]["text"] == "completed in 2 attempt(s)"
    positions = [i["position"] for i in items]
    assert positions == sorted(positions)
    streams = {i["stream"] for i in items}
    assert streams == {"event", "model", "sandbox"}
    # No reply text unless asked.
    assert not any("with a bug" in i["text"] for i in items)

    testing = await get_json(admin, logs, phase="testing")
    assert {i["phase"] for i in testing["items"]} == {"testing"}
    output = [i for i in testing["items"] if i["stream"] == "sandbox"]
    assert [(i["attempt"], i["line"], i["text"]) for i in output] == [
        (1, 1, "F."),
        (1, 2, "FAIL: test_count"),
        (1, 3, "Ran 2 tests"),
        (1, 4, "FAILED (failures=1)"),
        (2, 1, ".."),
        (2, 2, "Ran 2 tests"),
        (2, 3, "OK"),
    ]
    failed = next(i for i in testing["items"] if i["text"].startswith("run_tests failed"))
    assert (failed["level"], failed["attempt"], failed["line"]) == ("warning", 1, None)

    building = await get_json(admin, logs, phase="building", include="replies", attempt=1)
    texts = [(i["stream"], i["text"]) for i in building["items"]]
    assert ("model", "here is wc.py, with a bug") in texts
    assert all(i["attempt"] == 1 and i["phase"] == "building" for i in building["items"])
    call = next(t for s, t in texts if s == "model" and t.startswith("model call 1, try 1: ok"))
    assert "10 tokens in, 20 out, $0.0010, 12 ms" in call

    sandbox = await get_json(admin, logs, stream="sandbox", phase="sandboxing")
    assert [i["text"] for i in sandbox["items"]] == ["listening", "ready"]
    page = await get_json(admin, logs, limit=3, offset=2)
    assert page["items"] == items[2:5]
    assert page["total"] == everything["total"]


async def test_a_missing_blob_is_said_and_nothing_half_sent(
    admin: httpx.AsyncClient, repaired: RanJob, blobs: BlobStore
) -> None:
    blobs.path(sha256(FIXED)).unlink()
    tree = await get_json(admin, f"/api/jobs/{repaired.id}/artifacts")
    assert next(f for f in tree["items"] if f["path"] == "wc.py")["size"] is None
    for path, params in (("artifacts/file", {"path": "wc.py"}), ("artifacts.zip", {})):
        response = await admin.get(f"/api/jobs/{repaired.id}/{path}", params=params)
        assert response.status_code == 410, response.text
        assert "not in this deployment's blob store" in response.json()["detail"]
    # Attempt 1 does not need it.
    first = await admin.get(f"/api/jobs/{repaired.id}/artifacts.zip", params={"attempt": 1})
    assert first.status_code == 200


async def test_other_members_jobs_are_not_there_and_viewers_read_all(
    app: FastAPI, store: JobStore, blobs: BlobStore
) -> None:
    ada_token = add_user(store, "ada", Role.MEMBER)
    ada_job = run_job(store, blobs, [SECOND], submitted_by="ada")
    async with (
        client(app, ada_token) as ada,
        client(app, add_user(store, "bob", Role.MEMBER)) as bob,
        client(app, add_user(store, "vic", Role.VIEWER)) as vic,
    ):
        for path in ("artifacts", "artifacts.zip", "diff?from=1&to=1", "logs"):
            assert (await ada.get(f"/api/jobs/{ada_job.id}/{path}")).status_code == 200
            assert (await vic.get(f"/api/jobs/{ada_job.id}/{path}")).status_code == 200
            refused = await bob.get(f"/api/jobs/{ada_job.id}/{path}")
            assert refused.status_code == 404
            assert refused.json()["detail"] == f"job {ada_job.id} not found"
        file = await bob.get(f"/api/jobs/{ada_job.id}/artifacts/file", params={"path": "wc.py"})
        assert file.status_code == 404


async def test_stats_give_the_success_rate_phase_durations_and_jobs_per_day(
    admin: httpx.AsyncClient,
    repaired: RanJob,
    store: JobStore,
    blobs: BlobStore,
    projection: Projection,
) -> None:
    job = store.get(run_job(store, blobs, []).id)
    job.cancel(reason="not needed", by="admin", causation_id="test")
    store.save(job)
    projection.catch_up()
    stats = await get_json(admin, "/api/stats")
    assert (stats["ended_jobs"], stats["success_rate"]) == (2, 0.5)
    phases = [d["phase"] for d in stats["phase_durations"]]
    assert phases == ["planning", "building", "testing", "reviewing", "sandboxing"]
    testing = next(d for d in stats["phase_durations"] if d["phase"] == "testing")
    # Two attempts of write_tests and run_tests each.
    assert testing["steps"] == 4
    assert 0 <= testing["p50_seconds"] <= testing["p95_seconds"] <= testing["max_seconds"]
    assert testing["mean_seconds"] <= testing["max_seconds"]
    (today,) = stats["jobs_by_day"]
    assert (today["submitted"], today["completed"], today["failed"], today["cancelled"]) == (
        2,
        1,
        0,
        1,
    )


async def test_the_new_endpoints_are_documented_in_the_openapi_schema(
    admin: httpx.AsyncClient,
) -> None:
    schema = await get_json(admin, "/api/openapi.json")
    operations = {
        ("get", "/api/templates"): "TemplatesPage",
        ("post", "/api/templates"): "TemplatePublic",
        ("get", "/api/templates/{ref}"): "TemplatePublic",
        ("put", "/api/templates/{ref}"): "TemplatePublic",
        ("delete", "/api/templates/{ref}"): None,
        ("get", "/api/jobs/{job_id}/artifacts"): "ArtifactTree",
        ("get", "/api/jobs/{job_id}/artifacts/file"): None,
        ("get", "/api/jobs/{job_id}/artifacts.zip"): None,
        ("get", "/api/jobs/{job_id}/diff"): "AttemptsDiff",
        ("get", "/api/jobs/{job_id}/logs"): "JobLogPage",
        ("get", "/api/stats"): "StatsPublic",
    }
    for (method, path), model in operations.items():
        operation = schema["paths"][path][method]
        assert operation["summary"], (method, path)
        assert operation.get("description"), (method, path)
        responses = operation["responses"]
        ok = next(code for code in ("200", "201", "204") if code in responses)
        if model is not None:
            ref = responses[ok]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(f"/{model}"), (method, path, ref)
        errors = set(responses) - {ok}
        if path != "/api/stats" and path != "/api/templates":
            assert "404" in errors, (method, path)
        for code in errors - {"422"}:
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorPublic"
            ), (method, path, code)
    file = schema["paths"]["/api/jobs/{job_id}/artifacts/file"]["get"]["responses"]["200"]
    assert set(file["content"]) == {"text/plain", "application/octet-stream"}
    zipped = schema["paths"]["/api/jobs/{job_id}/artifacts.zip"]["get"]["responses"]["200"]
    assert set(zipped["content"]) == {"application/zip"}
