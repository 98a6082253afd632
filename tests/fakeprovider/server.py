"""The fake provider run in-process: a uvicorn server on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType

import uvicorn

from .app import FakeApp
from .script import Answer, RecordedRequest, Responder, Script


class FakeProvider:
    """Start with `with FakeProvider() as fake:` (or `start()`/`stop()`); script it with
    `fake.push(provider, Reply(...), Fault...)` and `fake.responder = ...`; read what it got
    with `fake.requests(provider)`."""

    def __init__(self, *, models: Mapping[str, list[str]] | None = None) -> None:
        self.script = Script()
        self.app = FakeApp(self.script, models)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, key: str = "test-key") -> dict[str, str]:
        """Each SDK's own variables, pointing every provider at this server."""
        return {
            "ANTHROPIC_API_KEY": key,
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "GEMINI_API_KEY": key,
            "GOOGLE_GEMINI_BASE_URL": self.url,
        }

    # ---- scripting ---------------------------------------------------------------------

    def push(self, provider: str, *answers: Answer) -> None:
        """Answers for `provider`'s next requests, in order."""
        self.script.push(provider, *answers)

    def set_responder(self, responder: Responder | None, provider: str | None = None) -> None:
        """What to answer when `provider`'s queue (or every queue) is empty."""
        self.script.set_responder(responder, provider)

    def require_key(self, provider: str, key: str | None) -> None:
        self.script.require_key(provider, key)

    def requests(self, provider: str | None = None) -> list[RecordedRequest]:
        return self.script.requests(provider)

    def pending(self, provider: str) -> int:
        return self.script.pending(provider)

    def reset(self) -> None:
        self.script.reset()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self.script.closing = True
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
