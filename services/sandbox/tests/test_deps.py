"""Dependencies resolved from the real package index: binary wheels only, cached and reused,
hostile requirement lines refused, a missing package failing with uv's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdo_kernel.steps import StepFailure
from vdo_sandbox.backend import Backend, RunSpec
from vdo_sandbox.deps import (
    MARKER,
    DependencyCache,
    parse_requirements,
    requirement_names,
    uv_command,
)


def test_requirements_are_normalised() -> None:
    text = """
# a comment
Six >= 1.0   # why
attrs[tests, Dev] (>=22, <30) ; python_version >= "3.8"
Typing_Extensions \\
    ==4.12.2 --hash=sha256:04E5CA0351E0F3F85C6853954072DF659D0D13FAC324D0072316B67D7794700D

"""
    assert parse_requirements(text.splitlines(), "requirements.txt") == [
        "six>=1.0",
        'attrs[dev,tests]>=22,<30; python_version >= "3.8"',
        "typing-extensions==4.12.2 --hash=sha256:"
        "04e5ca0351e0f3f85c6853954072df659d0d13fac324d0072316b67d7794700d",
    ]
    assert requirement_names(["six>=1.0", "Typing_Extensions==4"]) == {"six", "typing-extensions"}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("-e .", "options"),
        ("--editable=git+https://example.com/x.git", "options"),
        ("--index-url https://evil.example/simple", "options"),
        ("-i https://evil.example/simple", "options"),
        ("--extra-index-url https://evil.example/simple", "options"),
        ("-f https://evil.example/wheels", "options"),
        ("--find-links=/tmp/wheels", "options"),
        ("--trusted-host evil.example", "options"),
        ("-r ../../etc/other.txt", "options"),
        ("-c constraints.txt", "options"),
        ("six --config-settings=x=y", "options"),
        ("pkg @ https://evil.example/pkg-1.0-py3-none-any.whl", "URLs and local paths"),
        ("https://evil.example/pkg.tar.gz", "URLs and local paths"),
        ("git+https://github.com/example/pkg", "URLs and local paths"),
        ("./local-package", "URLs and local paths"),
        ("/abs/path/pkg", "URLs and local paths"),
        ("..\\pkg", "URLs and local paths"),
        ("file:///etc/passwd", "URLs and local paths"),
        ("six; os.system('x')", "not a requirement"),
        ("six==1.0 $(touch x)", "not a requirement"),
        ("six; __import__('os')", "not a requirement"),
    ],
)
def test_hostile_requirement_lines_are_refused(line: str, why: str) -> None:
    with pytest.raises(StepFailure, match=why):
        parse_requirements([line], "requirements.txt")


async def test_a_real_package_is_resolved_once_and_reused(tmp_path: Path) -> None:
    cache = DependencyCache(tmp_path / "wheels")
    lines: list[str] = []
    first = await cache.resolve(parse_requirements(["six", "attrs>=22"], "plan"), lines.append)
    assert first.path is not None
    assert not first.reused
    assert (first.path / "six.py").is_file()
    assert (first.path / "attrs").is_dir()
    assert (first.path / MARKER).read_text().split() == ["attrs>=22", "six"]
    assert any(line.startswith("dependency installed: six==") for line in lines)
    assert cache.uv_runs == 1
    # The same requirements in another order and spelling: the same environment, no uv.
    second = await cache.resolve(parse_requirements(["ATTRS >= 22", "Six"], "requirements.txt"))
    assert second.path == first.path
    assert second.reused
    assert cache.uv_runs == 1
    # Another process (a new cache on the same directory) finds it too.
    again = DependencyCache(tmp_path / "wheels")
    assert (await again.resolve(["six", "attrs>=22"])).reused
    assert again.uv_runs == 0
    # Nothing half-built is left around, and everything is readable by anyone.
    assert [p.name for p in (tmp_path / "wheels" / "envs").iterdir()] == [first.path.name]
    assert (first.path / "six.py").stat().st_mode & 0o777 == 0o644
    assert first.mounts() == {first.path: "/deps"}
    assert first.env()["PYTHONPATH"] == "/deps"


async def test_no_requirements_need_no_environment(tmp_path: Path) -> None:
    cache = DependencyCache(tmp_path / "wheels")
    resolved = await cache.resolve([])
    assert resolved.path is None
    assert resolved.mounts() == {}
    assert resolved.env() == {}
    assert cache.uv_runs == 0


async def test_a_missing_package_fails_with_uvs_reason(tmp_path: Path) -> None:
    cache = DependencyCache(tmp_path / "wheels")
    with pytest.raises(StepFailure) as failure:
        await cache.resolve(["six", "vdo-no-such-package-zz"])
    message = str(failure.value)
    assert message.startswith("dependency vdo-no-such-package-zz cannot be installed: ")
    assert "not found in the package registry" in message
    assert list((tmp_path / "wheels" / "envs").iterdir()) == []


async def test_a_package_without_wheels_is_not_built(tmp_path: Path) -> None:
    # PyYAML 3.13 was published for Linux as a source distribution only: building it would run
    # its setup.py, which is exactly what must not happen here.
    cache = DependencyCache(tmp_path / "wheels")
    with pytest.raises(StepFailure) as failure:
        await cache.resolve(["pyyaml==3.13"])
    assert str(failure.value).startswith("dependency pyyaml==3.13 cannot be installed: ")
    assert "no usable wheels" in str(failure.value)


async def test_a_resolved_environment_is_importable_in_the_sandbox(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    resolved = await DependencyCache(tmp_path / "wheels").resolve(["six==1.17.0"])
    (workspace / "main.py").write_text("import six\nprint(six.__version__, six.__file__)\n")
    result = await backend.run(
        RunSpec(
            workspace=workspace,
            command=("python3", "main.py"),
            env=resolved.env(),
            mounts=resolved.mounts(),
        )
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "1.17.0 /deps/six.py"


def test_uv_is_found() -> None:
    command = uv_command()
    assert command
    assert Path(command[0]).exists()
