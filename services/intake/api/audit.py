"""Tamper evidence over HTTP."""

from fastapi import APIRouter, Depends

from services.intake.api.deps import EngineDep
from services.intake.api.schemas import VerificationPublic
from services.intake.store import service as store
from services.kit.access import require

# the whole store, every region: for the administrators of all of it
router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require("admin", everywhere=True))])


@router.get("/verify", response_model=VerificationPublic,
            summary="Recompute the hash chain over the whole store and report the first broken link")
def verify(engine: EngineDep) -> VerificationPublic:
    return VerificationPublic.model_validate(store.verify(engine), from_attributes=True)
