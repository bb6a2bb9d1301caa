"""The FineHARD record (spec fgclip-v1 §2.5, fgclip-v2 §2.4) as pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fgclip_data.report import DataError


class BoxInfo(BaseModel):
    """One region: normalised ``[x1, y1, x2, y2, ...]`` (extra values such as a detector score are kept but
    unused), its short and long referring expressions and optional hard negatives of the short one."""

    model_config = ConfigDict(extra="ignore")

    bbox: list[float] = Field(min_length=4)
    short_expr: str = ""
    long_expr: str = ""
    flag_short_neg: int = 0
    short_expr_negs: dict[str, str] | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.bbox[:4]
        return x1, y1, x2, y2

    @property
    def negatives(self) -> list[str]:
        """The hard negatives of ``short_expr`` in JSON key order (empty unless ``flag_short_neg`` is 1)."""
        if not self.flag_short_neg or not self.short_expr_negs:
            return []
        return list(self.short_expr_negs.values())


class FineHARDRecord(BaseModel):
    """One image: ``f_path`` (relative image path), the long ``caption``, the ``short_caption`` and its boxes.

    ``is_cn`` marks a Chinese record (FG-CLIP 2: its presence, whatever the value).
    """

    model_config = ConfigDict(extra="ignore")

    f_path: str
    caption: str
    short_caption: str
    bbox_info: list[BoxInfo] = Field(default_factory=list)
    is_cn: Any = None

    @field_validator("bbox_info", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        return [] if value is None else value

    @property
    def chinese(self) -> bool:
        return self.is_cn is not None


def parse_record(data: Any, file: str | None = None, index: int | None = None) -> FineHARDRecord:
    """Validate one record; a failure is a :class:`DataError` naming the file, the record index and the field."""
    try:
        return FineHARDRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise DataError(first["msg"], file, index, field) from err
