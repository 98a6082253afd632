"""`vdo sandbox ...`: build the sandbox's Docker image, and say which backend would run code."""

from __future__ import annotations

from typing import Annotated

import typer

from vdo_kernel.settings import Settings

# The sandbox's modules (and the Docker SDK under them) are imported by the commands that use
# them: every other `vdo` command starts without them.

sandbox_app = typer.Typer(
    help="The sandbox that runs generated code: build its image, see which backend is used.",
    no_args_is_help=True,
)


@sandbox_app.command("build-image")
def build_image_command(
    tag: Annotated[
        str | None,
        typer.Option(help="Image tag (default: VDO_SANDBOX_IMAGE_PYTHON).", show_default=False),
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(help="Debian release (default: the host's).", show_default=False),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            help="Debian mirror URL (default: the host's apt source).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when the image exists.")] = False,
) -> None:
    """Build the Python sandbox image locally (debootstrap + docker import; no registry)."""
    from vdo_sandbox.image import ImageBuildError, build_image

    tag = tag or Settings().sandbox_image_python
    try:
        build_image(tag, suite=suite, mirror=mirror, force=force, progress=typer.echo)
    except ImageBuildError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@sandbox_app.command("status")
def status_command() -> None:
    """Which sandbox backend would run generated code here, and why."""
    from vdo_sandbox.backend import SandboxUnavailableError
    from vdo_sandbox.choose import choose

    try:
        choice = choose(Settings())
    except SandboxUnavailableError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{choice.backend.describe()}: {choice.reason}")
    close = getattr(choice.backend, "close", None)
    if callable(close):
        close()
