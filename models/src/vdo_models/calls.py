"""The model calls of one step, bracketed in the job's history and held to its budget.

Every try of every route is a `ModelCallStarted` (recorded before the request is sent, with its
worst-case cost held against the budget) and a `ModelCallFinished` (the reply as a blob, or the
error; tokens; cost, and how it was counted: a failed try the provider took is billed, see
`Pricing.failed_try`). A call whose worst case would exceed what is left of the job's budget, or
of the deployment's daily cap, is not made; a call that cost more than was left (the provider
counted more than estimated) fails the step at once, naming itself. A step redone after a crash
or a redelivery reuses
every reply recorded before it instead of paying again; a try that was started and never
finished is closed as ``interrupted`` and counted at its worst case, and the call is retried
under a new try number.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from vdo_kernel import logs
from vdo_kernel.domain import Job, OverBudgetError, call_key
from vdo_kernel.steps import StepContext, StepFailure
from vdo_kernel.store import JobStore
from vdo_models.interface import (
    JSONSchema,
    Message,
    ModelReply,
    ModelRequest,
    ProviderError,
    Route,
    Usage,
)
from vdo_models.pricing import Charge, Pricing
from vdo_models.router import Router, RouterError
from vdo_models.structured import parse_document

log = logs.get(__name__)

REPAIR = (
    "Your reply could not be used: {error}\n"
    "Reply again with only the corrected JSON document, matching the schema exactly."
)
# A reply cut off at the output limit is not worth parsing (whatever object is dug out of it is
# not the answer), and asking for a correction would be cut off the same way.
TRUNCATED = "the reply hit the output limit of {limit} tokens"
SHORTER = (
    "Your reply could not be used: it hit the output limit of {limit} tokens and was cut off "
    "before its end.\n"
    "Reply again with one complete JSON document, matching the schema exactly, that fits well "
    "within that limit: no prose outside the JSON, shorter comments and docstrings, and only "
    "the files that are needed."
)


_NO_USAGE = Usage()


class BudgetExceededError(StepFailure):
    """A call was not made: its worst case would exceed what is left; or a call made cost
    more than was left."""


# Held while a call's start is checked against the daily cap and recorded, by every process
# of every AI service: no two starts see the same room under the cap.
DAILY_CAP_LOCK = "vdo:daily-model-budget"


class DailySpend:
    """What every job together spent today (UTC) plus what the calls started today and still
    open hold, kept current by reading only the calls started or finished since the last look.
    A call left open (its job cancelled mid-call, say) holds until its day is over."""

    def __init__(self) -> None:
        self.day = ""
        self.position = 0
        self.spent = 0.0
        self.held: dict[str, float] = {}  # call key -> what it reserves

    def total(self, store: JobStore) -> float:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self.day:
            self.day, self.spent, self.held = today, 0.0, {}
        for entry in store.model_calls_after(self.position):
            self.position = entry.position
            if not entry.at.startswith(today):
                continue
            if entry.finished:
                self.held.pop(entry.key, None)
                self.spent += entry.amount_usd
            else:
                self.held[entry.key] = entry.amount_usd
        return self.spent + sum(self.held.values())


class StepCalls:
    """Asks the models of one phase for one step's replies."""

    def __init__(
        self,
        ctx: StepContext,
        *,
        phase: str,
        routes: list[Route],
        router: Router,
        pricing: Pricing,
        daily: DailySpend,
    ) -> None:
        self.ctx = ctx
        self.phase = phase
        self.routes = routes
        self.router = router
        self.pricing = pricing
        self.daily = daily
        self.calls = 0
        self.used: Route | None = None  # the route whose reply was used last

    async def ask(self, request: ModelRequest, schema: JSONSchema) -> dict[str, Any]:
        """One JSON document matching `schema`: a call, and if its reply does not parse or
        validate, or was cut off at the output limit, one repair call with the reason; then
        the step fails with that reason."""
        limit = request.max_output_tokens
        reply = await self.call(request)
        error: str | None
        if reply.truncated:
            error = TRUNCATED.format(limit=limit)
            ask = SHORTER.format(limit=limit)
            then = "asking once more for a complete, shorter answer"
        else:
            document, problem = parse_document(reply.text, schema)
            if document is not None:
                return document
            error, ask, then = problem, REPAIR.format(error=problem), "asking once more"
        self.ctx.emit("model", f"\n[{self.phase}] reply rejected: {error}; {then}\n")
        repair = ModelRequest(
            phase=request.phase,
            system=request.system,
            messages=(
                *request.messages,
                Message("assistant", reply.text[:200_000]),
                Message("user", ask),
            ),
            max_output_tokens=limit,
            json_schema=request.json_schema,
            temperature=request.temperature,
            task=request.task,
            attempt=request.attempt,
        )
        reply = await self.call(repair)
        if reply.truncated:
            raise StepFailure(
                f"the {self.phase} model's reply hit the output limit of {limit} tokens again, "
                "after it was asked for a shorter one"
            )
        document, problem = parse_document(reply.text, schema)
        if document is None:
            raise StepFailure(f"the {self.phase} model's reply was still not valid: {problem}")
        return document

    async def call(self, request: ModelRequest) -> ModelReply:
        """One logical call: the recorded reply when there is one, else the router's."""
        self.calls += 1
        call = self.calls
        ctx = self.ctx
        name = call_key(ctx.job.id, ctx.due.step.value, ctx.due.attempt, call)
        recorded = ctx.job.replies.get(name)
        if recorded is not None and ctx.blobs.exists(recorded):
            ctx.emit("model", f"[{self.phase}] reusing the reply recorded before an interruption\n")
            text = ctx.blobs.get(recorded).decode("utf-8", errors="replace")
            return ModelReply(text=text, usage=_NO_USAGE, model="(recorded)")
        await self._close_interrupted(name)
        tries = _Tries(self, call, request)
        try:
            reply, route = await self.router.complete(
                self.routes, request, on_text=tries.text, observer=tries
            )
        except RouterError as error:
            raise StepFailure(f"{self.phase}: {error}") from error
        self.used = route
        return reply

    async def _close_interrupted(self, name: str) -> None:
        open_keys = [k for k in self.ctx.job.open_calls if k.startswith(name + ":")]
        if not open_keys:
            return

        def close(job: Job) -> None:
            for key in open_keys:
                if key in job.open_calls:
                    job.finish_model_call(
                        key,
                        outcome="interrupted",
                        error=(
                            "interrupted before its reply was recorded (a crash or a "
                            "redelivery); counted at its worst-case cost"
                        ),
                        cost_usd=job.open_calls[key].reserved_usd,
                        causation_id=self.ctx.cause,
                    )

        await self.ctx.record(close)


class _Tries:
    """The router's observer for one logical call: records each try and writes the live log."""

    def __init__(self, owner: StepCalls, call: int, request: ModelRequest) -> None:
        self.owner = owner
        self.call = call
        self.request = request
        self.prompt_tokens = owner.pricing.estimate_tokens(request.prompt_text())
        self.key = ""
        self.started = 0.0
        self.reserved = 0.0

    async def text(self, piece: str) -> None:
        self.owner.ctx.emit("model", piece)

    async def try_started(self, route: Route, try_number: int) -> None:
        owner, ctx = self.owner, self.owner.ctx
        reserved = owner.pricing.worst_case(
            route, self.prompt_tokens, self.request.max_output_tokens
        )
        cap = ctx.settings.daily_budget_usd
        name = call_key(ctx.job.id, ctx.due.step.value, ctx.due.attempt, self.call)
        number = ctx.job.tries.get(name, 0) + 1
        keys: list[str] = []
        note = "" if try_number == 1 else f"try {try_number} of this call"

        def start(job: Job) -> None:
            keys.append(
                job.start_model_call(
                    ctx.due,
                    call=self.call,
                    try_number=number,
                    provider=route.provider,
                    model=route.model,
                    reserved_usd=reserved,
                    note=note,
                    causation_id=ctx.cause,
                )
            )

        def start_within_the_daily_cap() -> None:
            store = _store(ctx)
            with store.exclusive(DAILY_CAP_LOCK):
                committed = owner.daily.total(store)
                if committed + reserved > cap:
                    raise BudgetExceededError(
                        f"daily budget exceeded: the call to {route} could cost up to "
                        f"${reserved:.4f} and ${max(cap - committed, 0):.4f} of the daily "
                        f"${cap:.2f} is left (spent or held by calls under way)"
                    )
                ctx.record_now(start)

        try:
            # The job's rules hold the job's budget: a call over what is left is refused there.
            await asyncio.to_thread(start_within_the_daily_cap)
        except OverBudgetError as refused:
            raise BudgetExceededError(str(refused)) from None
        self.key = keys[-1]
        self.reserved = reserved
        self.started = time.monotonic()
        ctx.emit("model", f"[{owner.phase}] calling {route} (try {number})\n")

    async def try_finished(
        self,
        route: Route,
        try_number: int,
        reply: ModelReply | None,
        error: ProviderError | None,
        retry_in: float | None,
    ) -> None:
        owner, ctx = self.owner, self.owner.ctx
        latency_ms = (time.monotonic() - self.started) * 1000
        if reply is not None:
            charge = Charge(owner.pricing.cost(route, reply.usage), reply.usage, "reported")
        else:
            assert error is not None
            # A failed try is billed too once the provider took the request.
            charge = owner.pricing.failed_try(route, error, self.reserved)
        reply_blob = ctx.blobs.put_text(reply.text) if reply is not None else ""
        outcome = "ok" if error is None else ("refused" if error.kind == "refused" else "error")
        said = "" if error is None else _describe(error, charge.note)
        key = self.key
        overrun: list[str] = []

        def finish(job: Job) -> None:
            usage = charge.usage
            reason = job.finish_model_call(
                key,
                outcome=outcome,
                error=said,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cost_usd=charge.usd,
                cost_basis=charge.basis,
                latency_ms=round(latency_ms, 1),
                reply=reply_blob,
                causation_id=ctx.cause,
            )
            overrun[:] = [reason] if reason else []

        await ctx.record(finish)
        if error is not None:
            then = (
                f"retrying in {retry_in:.1f}s"
                if retry_in is not None
                else "trying the next route"
                if route != owner.routes[-1]
                else "no route left"
            )
            if overrun:
                then = "stopping: the job is over its budget"
            ctx.emit("model", f"\n[{owner.phase}] {route} failed: {said}; {then}\n")
            log.info("model call failed", phase=owner.phase, route=str(route), error=str(error))
        if overrun:
            # The call cost more than its worst case (the provider counted more than
            # estimated): the step stops here, blaming this call, not the next one.
            ctx.emit("model", f"\n[{owner.phase}] {overrun[0]}\n")
            raise BudgetExceededError(overrun[0])


def _describe(error: ProviderError, note: str = "") -> str:
    """The error as recorded with its try, and how its cost was counted (never cut off)."""
    status = f"{error.status} " if error.status else ""
    said = f"{status}{error.kind}: {error}"[:500]
    return f"{said}; {note}" if note else said


def _store(ctx: StepContext) -> JobStore:
    assert ctx.store is not None
    return ctx.store
