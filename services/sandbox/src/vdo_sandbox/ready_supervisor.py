"""The supervisor of a run with a port or command ready check. It runs inside the sandbox, by
the sandbox's python3 (``python3 -I -S -c <this file's text> CONFIG PROGRAM...``), never in this
service: it starts the program, checks until it is ready, the program exits or time runs out,
and reports on its own pipe (the program cannot reach that pipe: the supervisor is not
dumpable, so its /proc/<pid>/fd is closed to processes of the same user). Standard library
only, and nothing newer than the sandbox's python3 has."""

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any


def tell(report: int, ready: bool, detail: str) -> None:
    os.write(report, (json.dumps({"ready": ready, "detail": detail}) + "\n").encode())


def not_dumpable() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:  # noqa: S110 - without it the check still runs; only less shielded
        pass


def port_answers(port: int) -> tuple[bool, str]:
    last = ""
    for host in ("127.0.0.1", "::1"):
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError as error:
            last = f"port {port} on {host}: {error.strerror or error}"
        else:
            return True, f"port {port} answered"
    return False, last


def command_succeeds(command: list[str], left: float) -> tuple[bool, str]:
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=max(1.0, min(30.0, left)),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"`{shown}` did not finish in time"
    except OSError as error:
        return False, f"`{shown}` could not start: {error.strerror or error}"
    text = done.stdout[-1000:].decode("utf-8", "replace").strip()
    if done.returncode == 0:
        return True, f"`{shown}` exited 0" + (": " + text[-300:] if text else "")
    return False, f"`{shown}` exited {done.returncode}: {text[-500:]}"


def main(config: dict[str, Any], program: list[str]) -> int:
    report: int = config["fd"]
    os.set_inheritable(report, False)
    not_dumpable()
    try:
        child = subprocess.Popen(program, stdin=subprocess.DEVNULL)
    except OSError as error:
        tell(report, False, f"cannot start {program[0]}: {error.strerror or error}")
        return 127
    deadline = time.monotonic() + config["timeout"]
    last = "no answer yet"
    while True:
        code = child.poll()
        if code is not None:
            tell(
                report,
                False,
                f"exited with code {code} before the {config['kind']} check passed ({last})",
            )
            return code if code >= 0 else 128 - code
        left = deadline - time.monotonic()
        if left <= 0:
            tell(report, False, f"not ready within {config['timeout']:g}s: {last}")
            break
        if config["kind"] == "port":
            ready, said = port_answers(config["port"])
            pause = 0.1
        else:
            ready, said = command_succeeds(config["command"], left)
            pause = 0.25
        if ready:
            tell(report, True, said)
            break
        last = said
        time.sleep(pause)
    child.wait()
    return 0  # ready, or out of time (which the report says): the run's own end decides


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1]), sys.argv[2:]))
