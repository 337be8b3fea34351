"""Annotated dependencies of intake's routes."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from sqlalchemy import Engine

from services.events.v1 import Accepting
from services.intake.regions.service import Directory, Place
from services.intake.store.committer import GroupCommitter
from services.kit.access import Principal, require
from services.kit.problems import Problem
from services.kit.settings import Settings


def _directory(request: Request) -> Directory:
    return request.app.state.directory


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _clock(request: Request) -> Callable[[], datetime]:
    return request.app.state.clock


def _committer(request: Request) -> GroupCommitter:
    return request.app.state.committer


async def _accepting(request: Request) -> Accepting:
    """What a new event is judged against: intake's clock now, and the skew its settings allow
    (async: nothing blocks, and a request need not wait for a thread)."""
    committer: GroupCommitter = request.app.state.committer
    return Accepting(now=committer.clock(), max_future=committer.max_future,
                     zone=ZoneInfo(request.app.state.settings.timezone))


CommitterDep = Annotated[GroupCommitter, Depends(_committer)]
AcceptingDep = Annotated[Accepting, Depends(_accepting)]
ClockDep = Annotated[Callable[[], datetime], Depends(_clock)]
DirectoryDep = Annotated[Directory, Depends(_directory)]
SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]


EventsWriter = Annotated[Principal, Depends(require("events:write"))]
EventsReader = Annotated[Principal, Depends(require("events:read"))]


def visible_place(directory: Directory, principal: Principal, code: str | None) -> Place:
    """The region to filter by: `code` (default: the key's whole region). A code outside the
    key's region is answered exactly like an unknown one (404), so its existence is not revealed."""
    code = code or principal.region
    if not principal.covers(code):
        raise Problem(404, "not-found", "Not found", f"unknown region {code}")
    return directory.scope(code)


def today(settings: Settings, clock: Callable[[], datetime]) -> date:
    """Today in the province's time zone: deadlines are calendar days there."""
    return clock().astimezone(ZoneInfo(settings.timezone)).date()
