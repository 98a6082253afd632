"""The sandbox service: the only service that runs generated code.

The backend is chosen at start; when nothing on this host can sandbox generated code the
service says why and exits non-zero (it never runs generated code unsandboxed).
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial

from vdo_kernel import logs
from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_kernel.settings import Settings
from vdo_sandbox.backend import SandboxUnavailableError
from vdo_sandbox.choose import choose_backend
from vdo_sandbox.runs import Sandbox, run_tests, sandbox_run

SERVICE = "sandbox"


def main() -> None:
    settings = Settings()
    logs.configure(SERVICE, level=settings.log_level, fmt=settings.log_format)
    log = logs.get(SERVICE)
    try:
        backend = choose_backend(settings)
    except SandboxUnavailableError as error:
        log.error("no sandbox backend: refusing to start", reason=str(error))
        sys.exit(2)
    log.info("sandbox backend", backend=backend.name, runs_on=backend.describe())
    sandbox = Sandbox(settings, backend)
    work = {
        Step.RUN_TESTS: partial(run_tests, sandbox=sandbox),
        Step.SANDBOX_RUN: partial(sandbox_run, sandbox=sandbox),
    }
    asyncio.run(run_step_service(SERVICE, work, settings))


if __name__ == "__main__":
    main()
