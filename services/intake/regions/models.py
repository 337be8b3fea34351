"""Regions: province → prefecture → county, with each county's status."""

from sqlalchemy import BigInteger, Column, Index, String
from sqlmodel import Field

from services.intake.base import IntakeModel


class Region(IntakeModel, table=True):
    __tablename__ = "region"
    __table_args__ = (Index("ix_region_parent_code", "parent_code"),)

    code: str = Field(sa_column=Column(String(6), primary_key=True))
    name: str = Field(sa_column=Column(String(64), nullable=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    parent_code: str | None = Field(default=None, sa_column=Column(String(6)))
    status: str | None = Field(default=None, sa_column=Column(String(16)),
                               description="Counties only: in_poverty or exited.")
    exit_year: int | None = None
    poverty_county: bool | None = None
    status_basis: str | None = Field(default=None, sa_column=Column(String(16)),
                                     description="'source', 'demo', or 'event' once an event changed it.")
    status_sequence: int | None = Field(default=None, sa_column=Column(BigInteger),
                                        description="The event that last changed the status.")
    baseline_status: str | None = Field(default=None, sa_column=Column(String(16)),
                                        description="Counties: the status before any event (the data's baseline).")
    baseline_exit_year: int | None = None
