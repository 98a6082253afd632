"""`vdo replay`: the read models replayed from the event log, or, with `--verify`, replayed aside
and compared with the live ones, table by table, changing nothing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.text import Text

from vdo_cli.client import ClientError, redact_url

if TYPE_CHECKING:
    from vdo_projector.verify import TableComparison, VerifyReport

EXIT_EQUAL: Final = 0
EXIT_DIFFERENT: Final = 1
# A value shown in a difference is cut to this many characters (a description can be 20,000).
VALUE_WIDTH: Final = 80


def run_replay(database_url: str, console: Console, *, verify: bool, as_json: bool) -> int:
    """Replay (or verify) against the database; returns the exit code."""
    try:
        # Imported here: only this command needs the projector, which the CLI does not depend
        # on (an install without it still has every other command).
        from vdo_projector.projection import rebuild
        from vdo_projector.verify import verify as verify_read_models
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("vdo_projector"):
            raise
        raise ClientError("the projector (vdo-projector) is not installed") from exc
    doing = "verifying" if verify else "replaying"
    if not as_json:
        console.print(f"{doing} the read models of {redact_url(database_url)}", markup=False)
    try:
        result: Any = verify_read_models(database_url) if verify else rebuild(database_url)
    except Exception as exc:
        # The URL may carry a password; the message says which database without it.
        message = str(exc).replace(database_url, redact_url(database_url))
        raise ClientError(f"{doing} the read models failed: {message}") from exc
    if as_json:
        console.print_json(json.dumps(result.to_json(), default=str))
    elif verify:
        for line in report_lines(result):
            console.print(line)
    else:
        console.print(
            f"replayed {result.events_applied} events in {result.duration_seconds} s "
            f"(position {result.position})",
            markup=False,
        )
        for table, checksum in result.checksums.items():
            console.print(f"  {table:<9} {checksum}", markup=False)
    if verify and not result.equal:
        return EXIT_DIFFERENT
    return EXIT_EQUAL


def report_lines(report: VerifyReport) -> list[Text]:
    """The verdict, then each table: its checksum when equal, else what differs, row by row."""
    if report.problem is not None:
        return [Text(f"not verified: {report.problem}", style="red")]
    where = f"at position {report.position} (replayed aside in {report.duration_seconds} s)"
    lines = [
        Text(f"equal {where}", style="green")
        if report.equal
        else Text(f"different: the read models do not match the log {where}", style="red")
    ]
    for table in report.tables:
        if table.equal:
            lines.append(Text(f"  {table.table:<9} equal     {table.live_checksum}"))
        else:
            lines.extend(_table_lines(table))
    return lines


def _table_lines(table: TableComparison) -> list[Text]:
    lines = [
        Text(
            f"  {table.table:<9} different: {table.different} row(s) differ, "
            f"{table.missing} missing, {table.extra} extra "
            f"(live {table.live_checksum[:12]}, from the log {table.replayed_checksum[:12]})",
            style="bold",
        )
    ]
    for row in table.rows:
        key = ", ".join(f"{name}={value}" for name, value in row.key.items())
        if row.kind == "missing":
            lines.append(Text(f"    missing    {key}: the log gives this row; it is not there"))
        elif row.kind == "extra":
            lines.append(Text(f"    extra      {key}: there, but the log does not give it"))
        else:
            lines.append(Text(f"    different  {key}:"))
            for column, (live, replayed) in row.columns.items():
                lines.append(
                    Text(f"      {column}: live {_shown(live)}, from the log {_shown(replayed)}")
                )
    unlisted = table.different + table.missing + table.extra - len(table.rows)
    if unlisted > 0:
        lines.append(Text(f"    … and {unlisted} more", style="dim"))
    return lines


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"
