"""What running services say about themselves, for the API to show: a NATS key-value bucket
holding one small JSON document per service (the AI phases' model providers and routes, say).

A report is written when a service starts, so it reflects the configuration the service runs
with; it holds names and settings only, never a secret. The bucket is a view, like the read
models: losing it loses nothing, and the next start of each service writes it again.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

BUCKET = "VDO_REPORTS"
MAX_REPORT_BYTES = 64 * 1024
PUBLISH_TRIES = 5


async def _bucket(js: JetStreamContext, *, replicas: int = 1, create: bool) -> KeyValue | None:
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        if not create:
            return None
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=BUCKET,
                history=1,
                max_value_size=MAX_REPORT_BYTES,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )
    except BadRequestError:
        # Another service made it at the same moment (the AI services start together).
        return await js.key_value(BUCKET)


async def publish_report(
    js: JetStreamContext, service: str, report: dict[str, Any], *, replicas: int = 1
) -> None:
    """Keep `report` as what `service` says of itself, with the time it said it (tried a few
    times: at start, NATS may still be electing the bucket's leader)."""
    body = {**report, "reported_at": datetime.now(UTC).isoformat()}
    for attempt in range(1, PUBLISH_TRIES + 1):
        try:
            bucket = await _bucket(js, replicas=replicas, create=True)
            assert bucket is not None
            await bucket.put(service, json.dumps(body, separators=(",", ":")).encode())
            return
        except Exception:
            if attempt == PUBLISH_TRIES:
                raise
            await asyncio.sleep(0.5 * attempt)


async def read_reports(js: JetStreamContext) -> dict[str, dict[str, Any]]:
    """Every service's latest report, by service; empty before any service has reported."""
    bucket = await _bucket(js, create=False)
    if bucket is None:
        return {}
    try:
        keys = await bucket.keys()
    except NoKeysError:
        return {}
    reports: dict[str, dict[str, Any]] = {}
    for key in sorted(keys):
        try:
            entry = await bucket.get(key)
        except NotFoundError:
            continue  # deleted meanwhile
        try:
            body = json.loads(entry.value or b"")
        except ValueError:
            continue  # not one of ours: nothing to show
        if isinstance(body, dict):
            reports[key] = body
    return reports
