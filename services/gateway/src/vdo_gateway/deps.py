"""The dependencies routes ask for, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request

from vdo_gateway.resources import Bus, Resources
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

# Waiting longer than this for a pooled connection means the database is in trouble: answer
# 503 rather than hang the request.
POOL_WAIT_SECONDS = 5.0
# The largest offset or position a query takes: PostgreSQL's bigint holds it, so a larger one
# is a 422 that says so rather than a failed query.
MAX_POSITION = 2**62


def get_resources(request: Request) -> Resources:
    resources = request.app.state.resources
    assert isinstance(resources, Resources)
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_store(resources: ResourcesDep) -> JobStore:
    return resources.store


def get_bus(resources: ResourcesDep) -> Bus:
    return resources.bus


def get_read_db(resources: ResourcesDep) -> Iterator[psycopg.Connection[Any]]:
    with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
        resources.require_current_read_models(conn)
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
BusDep = Annotated[Bus, Depends(get_bus)]
ReadDbDep = Annotated[psycopg.Connection[Any], Depends(get_read_db)]
