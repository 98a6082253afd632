"""A generated project's dependencies, resolved outside the sandbox without running its code.

The requirements (the plan's `dependencies` and the project's requirements.txt) are untrusted:
only plain requirements naming packages on the configured index are accepted (no URLs, local
paths, editable installs, extra indexes or other options; hashes are fine). They are installed
as binary wheels only (`uv pip install --no-build`: no package's build code runs) for the
sandbox's python3 into an environment directory keyed by the normalised requirements and the
interpreter, built aside and renamed into place, and reused by every later run that needs the
same. A run mounts it read-only at /deps, with PYTHONPATH pointing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vdo_kernel.steps import StepFailure
from vdo_sandbox.backend import LineSink
from vdo_sandbox.bubblewrap import SANDBOX_PATH, SANDBOX_PYTHON

SANDBOX_MOUNT = "/deps"
UV_TIMEOUT_SECONDS = 600.0
MARKER = "vdo-requirements.txt"  # written last into a complete environment
KEY_VERSION = "1"
MAX_REQUIREMENTS = 100

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_OPERATOR = r"(?:~=|===|==|!=|<=|>=|<|>)"
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_CLAUSE = rf"{_OPERATOR}\s*{_VERSION}"
_REQUIREMENT = re.compile(
    rf"^(?P<name>{_NAME})\s*"
    rf"(?:\[\s*(?P<extras>{_NAME}(?:\s*,\s*{_NAME})*)?\s*\])?\s*"
    rf"(?P<spec>\(?\s*{_CLAUSE}(?:\s*,\s*{_CLAUSE})*\s*\)?)?\s*"
    r"(?:;\s*(?P<marker>.+))?$"
)
# PEP 508 environment markers: a closed grammar of these tokens (never evaluated as code).
_MARKER_TOKEN = re.compile(
    r"\s*(?:python_version|python_full_version|os_name|sys_platform|platform_release"
    r"|platform_system|platform_version|platform_machine|platform_python_implementation"
    r"|implementation_name|implementation_version|extra"
    r"|'[A-Za-z0-9._ +*!-]*'|\"[A-Za-z0-9._ +*!-]*\""
    r"|===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b|and\b|or\b|\(|\))\s*"
)
_HASH = re.compile(r"^--hash[=:]?(?P<value>(?:sha256|sha384|sha512):[0-9a-fA-F]+)$")
_COMMENT = re.compile(r"(^|\s+)#.*$")


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(lines: Iterable[str], source: str) -> list[str]:
    """The requirements in `lines` (requirements.txt syntax), each normalised; refuses anything
    but plain requirements on the index (with optional hashes)."""
    found: list[str] = []
    pending = ""
    for raw in lines:
        line = pending + raw.rstrip("\n")
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        line = _COMMENT.sub("", line).strip()
        if line:
            found.append(_normalise(line, source))
    if pending.strip():
        found.append(_normalise(_COMMENT.sub("", pending).strip(), source))
    return found


def _normalise(line: str, source: str) -> str:
    words = line.split()
    hashes: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--hash" and index + 1 < len(words):
            word = f"--hash={words[index + 1]}"
            index += 1
        match = _HASH.match(word)
        if match:
            hashes.append(match.group("value").lower())
        elif word.startswith("-"):
            raise StepFailure(
                f"refused the requirement {line!r} in {source}: options ({word.split('=')[0]}) "
                "are not allowed; name packages on the package index only"
            )
        else:
            rest.append(word)
        index += 1
    requirement = " ".join(rest)
    if not requirement:
        raise StepFailure(f"refused the requirement {line!r} in {source}: it names no package")
    if "@" in requirement or "://" in requirement or re.search(r"[/\\]", requirement):
        raise StepFailure(
            f"refused the requirement {line!r} in {source}: URLs and local paths are not "
            "allowed; name a package on the package index"
        )
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise StepFailure(
            f"refused the requirement {line!r} in {source}: not a requirement of the form "
            "name[extras] version-specifiers ; marker"
        )
    normalised = canonical_name(match.group("name"))
    if match.group("extras"):
        extras = sorted({canonical_name(e.strip()) for e in match.group("extras").split(",")})
        normalised += f"[{','.join(extras)}]"
    if match.group("spec"):
        normalised += re.sub(r"[\s()]", "", match.group("spec"))
    if match.group("marker"):
        marker = match.group("marker")
        position = 0
        while position < len(marker):
            token = _MARKER_TOKEN.match(marker, position)
            if token is None or token.end() == position:
                raise StepFailure(
                    f"refused the requirement {line!r} in {source}: not a requirement of the "
                    "form name[extras] version-specifiers ; marker (the marker is not valid)"
                )
            position = token.end()
        normalised += "; " + " ".join(marker.split())
    for value in sorted(set(hashes)):
        normalised += f" --hash={value}"
    return normalised


def requirement_names(requirements: Iterable[str]) -> set[str]:
    return {_name_of(requirement) for requirement in requirements}


@dataclass(frozen=True)
class Resolved:
    """An environment of resolved dependencies (or none needed), as a run mounts it."""

    requirements: tuple[str, ...] = ()
    path: Path | None = None
    reused: bool = False

    def mounts(self) -> dict[Path, str]:
        return {self.path: SANDBOX_MOUNT} if self.path is not None else {}

    def env(self) -> dict[str, str]:
        if self.path is None:
            return {}
        # Console scripts are there too, but they name the interpreter by its host path:
        # tools are best run as `python3 -m tool`.
        return {"PYTHONPATH": SANDBOX_MOUNT, "PATH": f"{SANDBOX_MOUNT}/bin:{SANDBOX_PATH}"}


def uv_command() -> list[str]:
    """How to run uv here: the one running us (`uv run` says which), on PATH, or the module."""
    named = os.environ.get("UV")
    if named and os.path.isfile(named) and os.access(named, os.X_OK):
        return [named]
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise StepFailure(
        "uv is not installed (python3 -m pip install uv), so dependencies cannot be resolved"
    )


@dataclass
class DependencyCache:
    """Environments of resolved dependencies under `root` (the settings' wheels_dir)."""

    root: Path
    python: str = SANDBOX_PYTHON
    uv: Sequence[str] | None = None
    timeout_seconds: float = UV_TIMEOUT_SECONDS
    uv_runs: int = 0  # how many times uv was run (a reused environment runs it not at all)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False)
    _interpreter: str | None = field(default=None, repr=False)

    async def resolve(
        self, requirements: Sequence[str], on_line: LineSink | None = None
    ) -> Resolved:
        """The environment for `requirements` (checked and normalised again here: nothing
        unchecked reaches uv)."""
        wanted = tuple(sorted(set(parse_requirements(requirements, "the dependencies"))))
        if not wanted:
            return Resolved()
        if len(wanted) > MAX_REQUIREMENTS:
            raise StepFailure(f"too many dependencies ({len(wanted)}; at most {MAX_REQUIREMENTS})")
        key = await self._key(wanted)
        target = self.root / "envs" / key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if (target / MARKER).is_file():
                return Resolved(wanted, target, reused=True)
            await self._build(wanted, target, on_line)
        return Resolved(wanted, target, reused=False)

    async def _key(self, requirements: tuple[str, ...]) -> str:
        if self._interpreter is None:
            self._interpreter = await self._describe_interpreter()
        text = "\n".join([KEY_VERSION, self._interpreter, *requirements])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    async def _describe_interpreter(self) -> str:
        probe = "import platform, sys; print(sys.version.split()[0], platform.machine())"
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-I",
                "-S",
                "-c",
                probe,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        except OSError as error:
            raise StepFailure(
                f"the sandbox's python ({self.python}) cannot be run: {error}"
            ) from error
        except TimeoutError:
            process.kill()
            await process.wait()
            raise StepFailure(f"the sandbox's python ({self.python}) does not answer") from None
        if process.returncode != 0 or not out.strip():
            raise StepFailure(f"the sandbox's python ({self.python}) cannot be run")
        return f"{self.python} {out.decode().strip()}"

    async def _build(
        self, requirements: tuple[str, ...], target: Path, on_line: LineSink | None
    ) -> None:
        envs = target.parent
        envs.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_remove_stale, envs)
        building = envs / f".tmp-{target.name}-{os.getpid()}-{os.urandom(4).hex()}"
        listing = envs / f"{building.name}.txt"
        listing.write_text("\n".join(requirements) + "\n")
        try:
            self.uv_runs += 1
            code, output = await self._uv(listing, building)
            if code != 0:
                raise StepFailure(_failure(requirements, output))
            if on_line is not None:
                for line in output.splitlines():
                    if line.startswith(" + "):
                        on_line(f"dependency installed: {line[3:]}")
            await asyncio.to_thread(_finish, building, requirements, target)
        finally:
            listing.unlink(missing_ok=True)
            if building.exists():
                await asyncio.to_thread(shutil.rmtree, building, True)

    async def _uv(self, listing: Path, building: Path) -> tuple[int, str]:
        command = [
            *(self.uv or uv_command()),
            "pip",
            "install",
            "--python",
            self.python,
            "--target",
            str(building),
            "--no-build",  # binary wheels only: no package's build code runs here
            "--link-mode",
            "copy",
            "-r",
            str(listing),
        ]
        env = {
            **_plain_environment(),
            "UV_CACHE_DIR": str(self.root / "uv-cache"),
            "UV_NO_CONFIG": "1",  # no uv.toml of anyone's is read
            "UV_PYTHON_DOWNLOADS": "never",
            "NO_COLOR": "1",
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.root,
                env=env,
            )
        except OSError as error:
            raise StepFailure(f"uv could not be started ({command[0]}): {error}") from error
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise StepFailure(
                f"resolving the dependencies took longer than {self.timeout_seconds:g}s"
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode or 0, out.decode("utf-8", errors="replace")


def _remove_stale(envs: Path) -> None:
    """Half-built environments of processes that died while building (older than an hour)."""
    cutoff = time.time() - 3600
    for entry in envs.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < cutoff:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def _plain_environment() -> dict[str, str]:
    """This process's environment without VDO's settings and anything that looks like a
    secret (uv's own variables, index credentials included, are kept: they configure it)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("UV_") or not (name.startswith("VDO_") or _SECRET_NAME.search(name))
    }


def _finish(building: Path, requirements: tuple[str, ...], target: Path) -> None:
    """Make the built environment readable by anyone and move it into place."""
    (building / ".lock").unlink(missing_ok=True)
    building.mkdir(exist_ok=True)
    for directory, _, files in os.walk(building):
        os.chmod(directory, 0o755)  # noqa: S103 - read by the sandbox's user
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)
    (building / MARKER).write_text("\n".join(requirements) + "\n")
    try:
        os.rename(building, target)
    except OSError:
        # Another process built the same environment meanwhile: theirs is as good.
        if not (target / MARKER).is_file():
            raise


def _failure(requirements: tuple[str, ...], output: str) -> str:
    """`dependency X cannot be installed: <uv's reason>`, from uv's output."""
    lines = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("Using ", "Resolved ", "Prepared ", "Installed ")):
            continue
        for prefix in ("error:", "cause:", "hint:", "\u00d7", "\u2570\u2500\u25b6", "\u2502"):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        if line:
            lines.append(line)
    reason = ": ".join([*lines[:1], " ".join(lines[1:])] if lines[1:] else lines)
    reason = reason or "uv failed without saying why"
    if len(reason) > 1000:
        reason = reason[:1000] + "..."
    lowered = reason.lower()
    shown = [requirement.split(" --hash")[0] for requirement in requirements]
    named = [
        requirement
        for requirement in shown
        if re.search(rf"(?<![\w-]){re.escape(_name_of(requirement))}(?![\w-])", lowered)
    ]
    label = "dependency" if len(named) == 1 else "dependencies"
    return f"{label} {', '.join(named or shown)} cannot be installed: {reason}"


def _name_of(requirement: str) -> str:
    match = re.match(_NAME, requirement)
    return canonical_name(match.group(0)) if match else requirement
