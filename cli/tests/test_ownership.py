"""One owner per data directory: a second stack (or a command that would start the stopped
stack's servers) is refused before it touches anything, and a stopped or dead owner frees it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vdo_cli.ownership import DataDirectoryInUseError, DataDirectoryLock
from vdo_cli.stack import Stack
from vdo_kernel.settings import Settings


def test_a_second_owner_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    with (
        DataDirectoryLock(tmp_path, purpose="the stack"),
        pytest.raises(DataDirectoryInUseError) as refused,
    ):
        DataDirectoryLock(tmp_path).acquire()
    message = str(refused.value)
    assert str(tmp_path) in message
    assert "the stack (pid " in message
    assert "another VDO_HOME" in message
    # Released: the next owner gets it.
    with DataDirectoryLock(tmp_path) as again:
        assert again.held


def test_an_owner_that_dies_frees_the_directory(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from vdo_cli.ownership import DataDirectoryLock;"
            f"lock = DataDirectoryLock(Path({str(tmp_path)!r})); lock.acquire();"
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirectoryInUseError, match=f"pid {holder.pid}"):
            DataDirectoryLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with DataDirectoryLock(tmp_path) as taken:
        assert taken.held


def test_a_second_stack_on_a_data_directory_changes_nothing_of_the_first(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://u@127.0.0.1:1/db")
    info = tmp_path / "stack.json"
    info.write_text(json.dumps({"pid": 1, "database_url": "x", "nats_url": "y"}))
    with DataDirectoryLock(tmp_path):  # the running stack
        second = Stack(settings, echo=None)
        with pytest.raises(DataDirectoryInUseError):
            second.start()
        second.stop()  # as `vdo up` does after a failed start
    assert info.exists()  # the first stack's file is left alone
    assert not (tmp_path / "nats").exists()  # no server of its own was started
