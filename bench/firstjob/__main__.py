"""From a fresh checkout to the first completed non-demo job with one provider's key.

Run by hand: `uv run python bench/firstjob`. It clones this repository into a new directory,
runs `make run` there with only ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL, pointing at a local
server that speaks Anthropic's wire protocol, since no real provider is reachable here), submits
a non-demo job as soon as the API answers, and prints how long each stage took: the set-up and
start (`make run` until the API answers) and the job (submitted until completed). The clone has
no virtual environment and no dashboard build; uv's and npm's download caches are whatever this
machine holds.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fakeprovider import FakeProvider  # noqa: E402
from tests.test_ai_phases import demo_responder  # noqa: E402

from vdo_cli.embedded import free_port  # noqa: E402

KEY = "sk-ant-bench-0123456789abcdef"
TASK = "a command-line word-count tool"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    with FakeProvider() as fake, tempfile.TemporaryDirectory(prefix="vdo-first-") as scratch:
        fake.set_responder(demo_responder(TASK))
        checkout = Path(scratch) / "vdo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_", "VDO_"))
            and k != "VIRTUAL_ENV"
        }
        env.update(
            ANTHROPIC_API_KEY=KEY,
            ANTHROPIC_BASE_URL=fake.url,
            VDO_PORT=str(port),
            VDO_HOME=str(checkout / ".vdo"),
        )
        started = time.monotonic()
        log = open(Path(scratch) / "make-run.log", "wb")  # noqa: SIM115
        make = subprocess.Popen(
            ["make", "run"],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            up = wait(
                lambda: httpx.get(f"{base}/api/health", timeout=2).status_code == 200,
                args.timeout,
                make,
            )
            token = (checkout / ".vdo" / "admin-token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            submitted = time.monotonic()
            job = httpx.post(
                f"{base}/api/jobs", json={"title": "wc", "description": TASK}, headers=headers
            ).json()["id"]

            def ended() -> bool:
                status = httpx.get(f"{base}/api/jobs/{job}", headers=headers).json()["status"]
                return status in ("completed", "failed", "cancelled")

            done = wait(ended, args.timeout, make)
            status = httpx.get(f"{base}/api/jobs/{job}", headers=headers).json()
            calls = httpx.get(f"{base}/api/jobs/{job}/calls", headers=headers).json()
        finally:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=120)
            log.close()
        models = sorted({f"{c['provider']}:{c['model']}" for c in calls["items"]})
        print(f"make run until the API answered: {up - started:6.1f} s")
        print(f"job submitted until {status['status']}:  {done - submitted:6.1f} s")
        print(f"fresh checkout to a completed job: {done - started:6.1f} s")
        print(f"models used: {', '.join(models)}")
        print(f"fake provider requests: {len(fake.requests())}")


def wait(ready: Callable[[], bool], timeout: float, make: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if make.poll() is not None:
            raise SystemExit(f"make run exited with {make.returncode}")
        try:
            if ready():
                return time.monotonic()
        except (httpx.HTTPError, KeyError, ValueError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"not ready within {timeout:g} s")


if __name__ == "__main__":
    main()
