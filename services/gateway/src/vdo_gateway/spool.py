"""Bundles in transit: an upload written to a file as it arrives, and a written bundle read back
out to the client, so that neither is ever held in memory whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

# Request chunks are small (tens of KiB); writing them a MiB at a time keeps the thread hops few.
WRITE_BYTES = 1024 * 1024
READ_BYTES = 1024 * 1024


async def receive_to(request: Request, target: Path) -> int:
    """Write the request body to `target`; returns its size. The body limit still applies: the
    body size middleware cuts the stream off with a 413 while it arrives."""
    size = 0
    pending = bytearray()
    with target.open("wb") as out:
        try:
            async for chunk in request.stream():
                pending += chunk
                if len(pending) >= WRITE_BYTES:
                    await asyncio.to_thread(out.write, pending)
                    size += len(pending)
                    pending.clear()
        except ClientDisconnect:
            # Nobody is left to read the answer; this only ends the request quietly.
            raise HTTPException(status_code=400, detail="the upload was cut off") from None
        if pending:
            await asyncio.to_thread(out.write, pending)
            size += len(pending)
    return size


async def send_from(source: BinaryIO) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time; the file is closed when they are sent (or when the
    client goes away and the generator is closed)."""
    try:
        while chunk := await asyncio.to_thread(source.read, READ_BYTES):
            yield chunk
    finally:
        source.close()
