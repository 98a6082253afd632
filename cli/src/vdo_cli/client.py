"""HTTP client for the gateway's REST API, where the CLI finds a running stack's addresses, and
which API token it sends."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from vdo_kernel.bootstrap import read_token_file, token_file
from vdo_kernel.domain import AI_PHASES
from vdo_kernel.settings import Settings

JSON = dict[str, Any]

# Written by `vdo up` under VDO_HOME while the stack runs, removed when it stops.
STACK_FILE = "stack.json"
START_HINT = "is the stack running? start it with `vdo up`"
EVENTS_PATH = "/api/jobs/{}/events"
CALLS_PATH = "/api/jobs/{}/calls"
# Model calls asked for per request (the gateway's largest page).
CALLS_PAGE = 500


class ClientError(Exception):
    """Something the user should read: the message is complete and safe to show as is."""


class GatewayUnreachable(ClientError):
    """Nothing answers at the gateway's address (refused, unknown host, connect timeout)."""


class ApiError(ClientError):
    """The gateway answered with an error; ``detail`` is its explanation."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class GatewayAddress:
    """Where the gateway is, and where that address came from (shown when it does not answer,
    because a stale stack file or a wrong VDO_PORT is the usual reason)."""

    url: str
    source: str


@dataclass(frozen=True)
class ApiToken:
    """The token the CLI sends, and where it came from (said when the gateway refuses it)."""

    value: str | None
    source: str


@dataclass(frozen=True)
class GatewayConfig:
    address: GatewayAddress
    token: str | None = None
    timeout_seconds: float = 10.0
    # Where the token came from, for the message when the gateway refuses it.
    token_source: str = ""


def api_token(settings: Settings, environ: dict[str, str] | None = None) -> ApiToken:
    """VDO_TOKEN first, then VDO_ADMIN_TOKEN, then the first admin's token that `vdo up` keeps
    in ``<VDO_HOME>/admin-token``. (Never a command-line option: that would show in the process
    list and the shell's history.)"""
    env = dict(os.environ if environ is None else environ)
    if env.get("VDO_TOKEN"):
        return ApiToken(env["VDO_TOKEN"].strip(), "VDO_TOKEN")
    if settings.admin_token is not None:
        return ApiToken(settings.admin_token.get_secret_value(), "VDO_ADMIN_TOKEN")
    kept = read_token_file(settings.home)
    if kept is not None:
        return ApiToken(kept, str(token_file(settings.home)))
    return ApiToken(
        None,
        f"no token: VDO_TOKEN is not set and there is no {token_file(settings.home)} (which "
        "`vdo up` writes at a deployment's first start)",
    )


@dataclass(frozen=True)
class SubmitJob:
    # None: the template's (a job needs both, from the command or from its template).
    title: str | None
    description: str | None
    # None leaves the choice to the gateway (its configured defaults).
    max_attempts: int | None = None
    budget_usd: float | None = None
    # Model routes by AI phase (planner, builder, tester, reviewer): the first, then fallbacks.
    routes: dict[str, list[str]] | None = None
    # Its place in the queue: 0 to 9, higher first (None: the gateway's default).
    priority: int | None = None
    # A template (its id or name) that fills in what the command leaves out.
    template: str | None = None


def parse_routes(values: list[str]) -> dict[str, list[str]]:
    """``--model PHASE=provider:model[,fallback...]`` values as routes by phase; a ValueError
    says what is wrong. Providers are checked by the gateway, which knows them."""
    routes: dict[str, list[str]] = {}
    for value in values:
        phase, sep, chain = value.partition("=")
        phase = phase.strip().lower()
        if not sep or not phase:
            raise ValueError(
                f"{value!r} is not PHASE=provider:model[,fallback...] "
                "(e.g. planner=anthropic:claude-sonnet-4-5,openai:gpt-4.1)"
            )
        if phase not in AI_PHASES:
            raise ValueError(f"{phase!r} is not a phase with a model: {', '.join(AI_PHASES)}")
        if phase in routes:
            raise ValueError(
                f"{phase} is given twice; list its fallbacks after the first, comma-separated"
            )
        listed = [route.strip() for route in chain.split(",")]
        for route in listed:
            provider, colon, model = route.partition(":")
            if not colon or not provider.strip() or not model.strip():
                raise ValueError(f"{phase}: {route!r} is not provider:model (e.g. openai:gpt-4.1)")
        routes[phase] = listed
    return routes


@dataclass(frozen=True)
class JobQuery:
    status: str | None = None
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True)
class EventQuery:
    job_id: str
    # Only events after this global position, when the gateway supports asking for that; the
    # caller filters by position anyway, so an older gateway that ignores it is still correct.
    after: int | None = None


@dataclass(frozen=True)
class JobPage:
    items: list[JSON]
    total: int


@dataclass(frozen=True)
class StackFile:
    """The addresses a running embedded stack published under VDO_HOME."""

    path: Path
    nats_url: str | None
    database_url: str | None
    gateway_url: str | None


def read_stack_file(home: Path) -> StackFile | None:
    """The running stack's addresses, or None when no stack file is there."""
    path = home / STACK_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClientError(
            f"cannot read {path} ({exc}); if no stack is running, remove it and start one "
            "with `vdo up`"
        ) from exc
    if not isinstance(raw, dict):
        raise ClientError(f"{path} does not hold a JSON object; remove it and run `vdo up`")

    def text(key: str) -> str | None:
        value = raw.get(key)
        return value if isinstance(value, str) and value else None

    return StackFile(
        path=path,
        nats_url=text("nats_url"),
        database_url=text("database_url"),
        gateway_url=text("gateway_url"),
    )


def gateway_address(explicit: str | None, settings: Settings) -> GatewayAddress:
    """--api / VDO_API_URL first, then the running stack's file, then VDO_HOST and VDO_PORT."""
    if explicit:
        return GatewayAddress(explicit.rstrip("/"), "--api / VDO_API_URL")
    stack = read_stack_file(settings.home)
    if stack is not None and stack.gateway_url:
        return GatewayAddress(stack.gateway_url.rstrip("/"), str(stack.path))
    host = settings.host
    # A server bound to every interface is reached on loopback from the same machine.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return GatewayAddress(f"http://{host}:{settings.port}", "VDO_HOST / VDO_PORT")


def database_url(settings: Settings) -> str:
    """VDO_DATABASE_URL, else the running embedded stack's database."""
    if settings.database_url:
        return settings.database_url
    stack = read_stack_file(settings.home)
    if stack is not None and stack.database_url:
        return stack.database_url
    raise ClientError(
        "no database to use: VDO_DATABASE_URL is not set and no running stack was found "
        f"(no {settings.home / STACK_FILE}); {START_HINT}"
    )


def nats_address(settings: Settings) -> str:
    """VDO_NATS_URL, else the running embedded stack's NATS."""
    if settings.nats_url:
        return settings.nats_url
    stack = read_stack_file(settings.home)
    if stack is not None and stack.nats_url:
        return stack.nats_url
    raise ClientError(
        "no NATS to read the live log from: VDO_NATS_URL is not set and no running stack was "
        f"found (no {settings.home / STACK_FILE}); {START_HINT}"
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced, so it can be shown or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Gateway:
    """One connection pool to the gateway, for the lifetime of a command."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        headers = {"Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._http = httpx.Client(
            base_url=config.address.url, headers=headers, timeout=config.timeout_seconds
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def url(self) -> str:
        return self._config.address.url

    @property
    def token(self) -> str | None:
        return self._config.token

    def submit(self, command: SubmitJob) -> JSON:
        body: JSON = {}
        if command.title is not None:
            body["title"] = command.title
        if command.description is not None:
            body["description"] = command.description
        if command.template is not None:
            body["template"] = command.template
        if command.max_attempts is not None:
            body["max_attempts"] = command.max_attempts
        if command.budget_usd is not None:
            body["budget_usd"] = command.budget_usd
        if command.routes:
            body["routes"] = command.routes
        if command.priority is not None:
            body["priority"] = command.priority
        return _object(self._request("POST", "/api/jobs", json=body))

    def cancel(self, job_id: str, reason: str | None = None) -> JSON:
        body: JSON = {} if reason is None else {"reason": reason}
        return _object(self._request("POST", f"/api/jobs/{_segment(job_id)}/cancel", json=body))

    def retry(
        self, job_id: str, start: str, *, reason: str | None = None, priority: int | None = None
    ) -> JSON:
        body: JSON = {"from": start}
        if reason:
            body["reason"] = reason
        if priority is not None:
            body["priority"] = priority
        return _object(self._request("POST", f"/api/jobs/{_segment(job_id)}/retry", json=body))

    def jobs(self, query: JobQuery) -> JobPage:
        params: dict[str, str | int] = {"limit": query.limit, "offset": query.offset}
        if query.status:
            params["status"] = query.status
        answer = self._request("GET", "/api/jobs", params=params)
        items = _items(answer)
        total = answer.get("total") if isinstance(answer, dict) else None
        return JobPage(items=items, total=total if isinstance(total, int) else len(items))

    def job(self, job_id: str) -> JSON:
        return _object(self._request("GET", f"/api/jobs/{_segment(job_id)}"))

    def calls(self, job_id: str) -> list[JSON]:
        """Every model call of a job (one item per try), a page at a time."""
        path = CALLS_PATH.format(_segment(job_id))
        calls: list[JSON] = []
        while True:
            answer = self._request("GET", path, params={"limit": CALLS_PAGE, "offset": len(calls)})
            page = _items(answer)
            calls.extend(page)
            total = answer.get("total") if isinstance(answer, dict) else None
            if not page or not isinstance(total, int) or len(calls) >= total:
                return calls

    def events(self, query: EventQuery) -> list[JSON]:
        params = {"after": query.after} if query.after is not None else None
        answer = self._request("GET", EVENTS_PATH.format(_segment(query.job_id)), params=params)
        # Bare, as {"items": [...]} or as {"job_id": ..., "events": [...]}.
        key = "events" if isinstance(answer, dict) and "events" in answer else "items"
        return _items(answer, key)

    # ---- templates --------------------------------------------------------------------

    def templates(self, *, limit: int, offset: int = 0, builtin: bool | None = None) -> JobPage:
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if builtin is not None:
            params["builtin"] = "true" if builtin else "false"
        answer = self._request("GET", "/api/templates", params=params)
        items = _items(answer)
        total = answer.get("total") if isinstance(answer, dict) else None
        return JobPage(items=items, total=total if isinstance(total, int) else len(items))

    def template(self, ref: str) -> JSON:
        return _object(self._request("GET", f"/api/templates/{_segment(ref)}"))

    def create_template(self, body: JSON) -> JSON:
        return _object(self._request("POST", "/api/templates", json=body))

    def delete_template(self, ref: str) -> None:
        self._request("DELETE", f"/api/templates/{_segment(ref)}")

    # ---- accounts ---------------------------------------------------------------------

    def me(self) -> JSON:
        return _object(self._request("GET", "/api/me"))

    def users(self) -> list[JSON]:
        return _items(self._request("GET", "/api/users"))

    def add_user(self, name: str, role: str) -> JSON:
        return _object(self._request("POST", "/api/users", json={"name": name, "role": role}))

    def set_role(self, name: str, role: str) -> JSON:
        return _object(self._request("PATCH", f"/api/users/{_segment(name)}", json={"role": role}))

    def tokens(self, *, user: str | None = None, revoked: bool = True) -> list[JSON]:
        params: dict[str, str] = {"revoked": "true" if revoked else "false"}
        if user:
            params["user"] = user
        return _items(self._request("GET", "/api/tokens", params=params))

    def create_token(
        self, *, user: str | None = None, name: str | None = None, expires_in_days: int | None
    ) -> JSON:
        body: JSON = {}
        if user:
            body["user"] = user
        if name:
            body["name"] = name
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return _object(self._request("POST", "/api/tokens", json=body))

    def revoke_token(self, token_id: str) -> JSON:
        return _object(self._request("DELETE", f"/api/tokens/{_segment(token_id)}"))

    def accepts_query(self, path: str, name: str) -> bool:
        """Whether the gateway's OpenAPI schema lists query parameter ``name`` for a GET on
        ``path`` (written with ``{}`` for path parameters). False when it cannot tell."""
        try:
            schema = self._request("GET", "/api/openapi.json")
        except ApiError:
            return False
        paths = schema.get("paths") if isinstance(schema, dict) else None
        if not isinstance(paths, dict):
            return False
        for template, operations in paths.items():
            if re.sub(r"\{[^}]*\}", "{}", str(template)) != path:
                continue
            get = operations.get("get") if isinstance(operations, dict) else None
            parameters = get.get("parameters", []) if isinstance(get, dict) else []
            return any(
                isinstance(p, dict) and p.get("in") == "query" and p.get("name") == name
                for p in parameters
            )
        return False

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self._config.address.url
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise GatewayUnreachable(
                f"the gateway is not reachable at {url} (address from "
                f"{self._config.address.source}): {START_HINT}"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise ClientError(f"{url} is not an http:// or https:// URL") from exc
        except httpx.TimeoutException as exc:
            raise ClientError(
                f"the gateway at {url} did not answer within {self._config.timeout_seconds:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ClientError(f"talking to the gateway at {url} failed: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise ClientError(f"{url} is not a valid gateway URL: {exc}") from exc
        if response.is_error:
            detail = _error_detail(response)
            if response.status_code == 401 and self._config.token_source:
                detail = f"{detail} (token sent: {self._config.token_source})"
            raise ApiError(response.status_code, detail)
        if response.status_code == 204:
            return None  # done, nothing to say (a deletion)
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(
                f"the gateway at {url} answered {method} {path} with something that is not "
                "JSON; is that address really the VDO gateway?"
            ) from exc


def _segment(value: str) -> str:
    # An id is one path segment whatever the user typed, so "../x" cannot reach another route.
    return quote(value, safe="")


def _object(answer: Any) -> JSON:
    if not isinstance(answer, dict):
        raise ClientError(f"the gateway answered with {type(answer).__name__}, not an object")
    return answer


def _items(answer: Any, key: str = "items") -> list[JSON]:
    """A list answer, bare or wrapped in an object under ``key``."""
    if isinstance(answer, dict):
        answer = answer.get(key)
    if not isinstance(answer, list):
        raise ClientError("the gateway answered with something that is not a list of items")
    return [item for item in answer if isinstance(item, dict)]


def _error_detail(response: httpx.Response) -> str:
    """The gateway's explanation of an error, as one readable line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        return "; ".join(_validation_problem(p) for p in detail)
    if detail is not None:
        return json.dumps(detail)
    text = response.text.strip()
    reason = response.reason_phrase or "error"
    return f"HTTP {response.status_code} {reason}" + (f": {text[:200]}" if text else "")


def _validation_problem(problem: Any) -> str:
    """One request-validation problem ({"loc": [...], "msg": ...}) as "field: message"."""
    if not isinstance(problem, dict):
        return str(problem)
    loc = problem.get("loc")
    where = (
        [str(p) for p in loc if p not in ("body", "query", "path")] if isinstance(loc, list) else []
    )
    message = str(problem.get("msg", problem))
    return f"{'.'.join(where)}: {message}" if where else message
