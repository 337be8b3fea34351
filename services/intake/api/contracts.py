"""The event contracts, as JSON Schema and AsyncAPI, generated from the models."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from services.events import registry, schemas
from services.intake.api.deps import SettingsDep
from services.kit.access import require
from services.kit.problems import MEDIA_TYPE, Problem

# reference documents, the same for everyone: any valid key
router = APIRouter(tags=["contracts"], dependencies=[Depends(require())])


@router.get("/asyncapi.json", summary="AsyncAPI 3 document of the topics intake publishes")
def asyncapi(settings: SettingsDep) -> dict[str, Any]:
    return schemas.asyncapi(settings.topic_partitions)


@router.get("/v1/schemas", summary="Every event type and schema version")
def list_schemas() -> list[dict[str, Any]]:
    return [{"type": t, "schema_version": v, "schema": f"/v1/schemas/{t}?version={v}",
             "sample": f"/v1/schemas/{t}/sample?version={v}"} for t, v in sorted(registry.MODELS)]


def _known(type_: str, version: int) -> tuple[str, int]:
    if (type_, version) not in registry.MODELS:
        raise Problem(404, "not-found", "Not found", f"no event type {type_!r} with schema_version {version}")
    return type_, version


@router.get("/v1/schemas/{type}", summary="JSON Schema (2020-12) of one event type",
            responses={404: {"description": "Unknown type or version", "content": {MEDIA_TYPE: {}}}})
def get_schema(type: Annotated[str, Path(max_length=64)], version: Annotated[int, Query(ge=1)] = 1) -> dict[str, Any]:
    return schemas.json_schema(*_known(type, version))


@router.get("/v1/schemas/{type}/sample", summary="A sample event of one type",
            responses={404: {"description": "Unknown type or version", "content": {MEDIA_TYPE: {}}}})
def get_sample(type: Annotated[str, Path(max_length=64)], version: Annotated[int, Query(ge=1)] = 1) -> dict[str, Any]:
    return schemas.sample(*_known(type, version))
