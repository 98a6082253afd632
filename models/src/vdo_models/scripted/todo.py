"""The "FastAPI todo API with SQLite and tests" demo (the README's example job)."""

from __future__ import annotations

from vdo_models.scripted.demo import PYTEST_COMMAND, Comment, Demo, Patch, matcher

_VALIDATOR = """
    @field_validator("title")
    @classmethod
    def title_is_not_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("title must not be empty")
        return value
"""

_VALIDATION_TESTS = """def test_empty_titles_are_rejected(client: TestClient) -> None:
    for title in ("", "   "):
        assert client.post("/todos", json={"title": title}).status_code == 422
    created = client.post("/todos", json={"title": "kept"}).json()
    assert client.put(f"/todos/{created['id']}", json={"title": ""}).status_code == 422
    assert client.get("/todos").json() == [created]


def test_titles_are_stored_trimmed(client: TestClient) -> None:
    assert client.post("/todos", json={"title": "  tidy  "}).json()["title"] == "tidy"


"""

DEMO = Demo(
    name="todo",
    description="a FastAPI todo API with SQLite and tests",
    matches=matcher(r"\bto-?dos?\b", r"fastapi|\bapis?\b"),
    plan={
        "summary": (
            "[scripted model] A todo API: FastAPI with pydantic models over SQLite (the standard "
            "library's sqlite3; the database file is TODO_DB, by default todos.db in the working "
            "directory). Endpoints: GET /todos, POST /todos, GET/PUT/DELETE /todos/{id}."
        ),
        "runtime": "python3",
        "files": ["app.py", "requirements.txt"],
        "dependencies": ["fastapi>=0.110", "uvicorn>=0.29", "httpx>=0.27", "pytest>=8.0"],
        "steps": [
            "app.py: pydantic models TodoIn (title, done) and Todo (id, title, done)",
            "app.py: a connection helper that opens TODO_DB (default todos.db), creates the "
            "todos table if it is missing and commits or rolls back per request",
            "app.py: GET /todos lists todos by id; POST /todos creates one and answers 201",
            "app.py: GET, PUT and DELETE /todos/{id}, answering 404 for an unknown id and 204 "
            "after a delete",
            "requirements.txt: the packages the API and its tests need",
        ],
        "test_strategy": (
            "pytest through fastapi.testclient (which needs httpx), each test on its own SQLite "
            "file (TODO_DB set to a temporary path): every endpoint, the status codes (201, 204, "
            "404, 422), and that rows really land in the SQLite file. Tests live in tests/."
        ),
        "run_command": [
            "python3",
            "-m",
            "uvicorn",
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "8000",
        ],
        "ready_check": {"kind": "port", "port": 8000},
    },
    build_files=("app.py", "requirements.txt"),
    test_files=("tests/test_app.py",),
    test_command=PYTEST_COMMAND,
    bug=(
        Patch(
            "app.py",
            finished='@app.post("/todos", status_code=201)',
            earlier='@app.post("/todos")',
        ),
    ),
    bug_comment=Comment(
        "app.py",
        "POST /todos answers 200 OK; creating a todo should answer 201 Created "
        '(@app.post("/todos", status_code=201)).',
    ),
    before_review=(
        Patch(
            "app.py",
            finished="from pydantic import BaseModel, Field, field_validator",
            earlier="from pydantic import BaseModel, Field",
        ),
        Patch("app.py", finished=_VALIDATOR, earlier=""),
        Patch("tests/test_app.py", finished=_VALIDATION_TESTS, earlier=""),
    ),
    review_comment=Comment(
        "app.py",
        'Add input validation for empty titles: POST /todos with {"title": ""} or a title of '
        "only spaces creates a todo nobody can read. Reject blank titles with 422 (a pydantic "
        "field validator on TodoIn, which PUT uses too) and store titles trimmed.",
    ),
    approval=(
        "[scripted model] Approved. This is the built-in scripted model's fixed review of its "
        "own demo, not a real code review: the todo API has the planned endpoints, validates "
        "its input with pydantic, keeps its data in SQLite and its tests pass."
    ),
    approval_comments=(
        Comment(
            "app.py",
            "Fine for a demo; a larger API would add pagination to GET /todos.",
        ),
    ),
)
