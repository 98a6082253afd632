"""A local fake of the Anthropic, OpenAI and Google GenAI (Gemini) HTTP APIs.

It speaks each provider's wire protocol closely enough that the official SDKs work against it
unmodified, given its URL as their base URL:

- Anthropic Messages: ``POST /v1/messages`` (JSON, or SSE with ``"stream": true``),
  ``GET /v1/models``; key in ``x-api-key`` (or ``Authorization: Bearer``).
- OpenAI Chat Completions: ``POST /v1/chat/completions`` (JSON, or SSE chunks ending in
  ``data: [DONE]``, with a final usage chunk when ``stream_options.include_usage``),
  ``GET /v1/models``; key in ``Authorization: Bearer``. Base URL: ``<url>/v1``.
- Gemini Developer API: ``POST /{version}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse``, ``GET /{version}/models``; key in ``x-goog-api-key``
  or ``?key=``.

A request without a key (or with another key than one set by `require_key`) gets 401 in the
provider's error format. Every request is recorded: provider, model, path, query, all headers
(keys included, so tests can check which key was sent) and the JSON body.

In-process use (tests, benchmarks)::

    from tests.fakeprovider import FakeProvider, Fault, Reply

    with FakeProvider() as fake:
        env = fake.env()  # ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, OPENAI_..., GEMINI_...
        fake.push("anthropic", Fault.rate_limited(retry_after=2), Reply(text='{"ok": true}'))
        fake.set_responder(lambda provider, model, body: Reply(text="hi"))  # queue empty
        ...
        last = fake.requests("anthropic")[-1]  # .headers, .body, .status, .delta_sent_at, .billed

Answers are taken per provider in order; when a provider's queue is empty the responder is
called with ``(provider, model, request_json)``. `Reply` carries the text (streamed in
``deltas`` pieces, ``delta_delay`` seconds apart, with a quiet spell of ``pause`` seconds after
``pause_after`` pieces if asked, and Anthropic's ``ping`` events every ``ping_every`` seconds
while it waits), token counts (``input_tokens`` are the uncached ones; ``cached_tokens``;
``cache_write_tokens``) and ``truncated`` (it ended at the output limit, with each provider's
own stop value). Each recorded request keeps what a real provider would bill for it
(``billed``: nothing for an error status; for a reply that began, the prompt and the output
sent). `Fault` builds failures:
``rate_limited(retry_after)``, ``server_error(500|503)``, ``overloaded()`` (529 on Anthropic,
503 elsewhere), ``http(status, message)``, ``timeout(seconds)`` (the server hangs),
``stream_cut(text, after_deltas, delta_delay)`` (the connection is dropped mid-reply),
``stream_error(status, after_deltas)`` (the provider's error event mid-stream, e.g. Anthropic's
overloaded_error) and ``refusal(text)``. Malformed JSON is just a `Reply` whose text is not
JSON.

Standalone: ``python -m tests.fakeprovider --port 8765`` (``--port 0`` picks a free port and
prints it). Its control API, for a stack of real processes driven by a test:

- ``POST /_control/script`` ``{"provider": "openai", "items": [{"reply": {"text": "..."}},
  {"fault": {"kind": "rate_limited", "retry_after": 1}}], "replace": false}``: queue answers
  (a fault's kind names a `Fault` constructor above, or is ``status`` with ``status`` and
  ``message``; the other keys are its arguments, or the `Reply` fields); answers
  ``{"pending": n}``.
- ``POST /_control/default`` ``{"provider": "google" | null, "reply": {...} | null}``: the reply
  given when a queue is empty (null restores the built-in one).
- ``POST /_control/keys`` ``{"provider": "anthropic", "key": "sk-..." | null}``: accept only
  that key.
- ``GET /_control/requests[?provider=...]``: the recorded requests as JSON.
- ``POST /_control/reset``: forget queues, defaults, keys and recorded requests.
- ``GET /_control/health``.
"""

from __future__ import annotations

from .script import Answer, Bill, Fault, RecordedRequest, Reply, Responder
from .server import FakeProvider

__all__ = ["Answer", "Bill", "FakeProvider", "Fault", "RecordedRequest", "Reply", "Responder"]
