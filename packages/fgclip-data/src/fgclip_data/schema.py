"""The FineHARD record as pydantic models: an image path, a long and a short caption, and its boxes (normalised
``[x1, y1, x2, y2]``, short / long region expressions, optional hard negatives of the short one; Chinese records
carry ``is_cn``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from fgclip_data.report import DataError


def hard_negatives(flag_short_neg: int, texts: list[str]) -> list[str]:
    """The hard negatives a box uses: its negatives' texts when ``flag_short_neg`` is set, else none (the one rule
    for validated records and stored ones)."""
    return texts if flag_short_neg and texts else []


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
        return hard_negatives(self.flag_short_neg, list((self.short_expr_negs or {}).values()))


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
    _dropped_boxes: list[tuple[int, str]] = PrivateAttr(default_factory=list)

    @field_validator("bbox_info", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        return [] if value is None else value

    @property
    def chinese(self) -> bool:
        return self.is_cn is not None

    @property
    def dropped_boxes(self) -> list[tuple[int, str]]:
        """(index in the file's ``bbox_info``, reason) of the malformed boxes :func:`parse_record` left out."""
        return self._dropped_boxes


# pydantic error types -> the kind of malformed box, for the reports
_BOX_PROBLEMS = {
    "too_short": "fewer than 4 coordinates",
    "float_parsing": "non-numeric coordinates",
    "float_type": "non-numeric coordinates",
    "list_type": "bbox is not a list",
    "missing": "no bbox",
    "finite_number": "non-finite coordinates",
}


def _box_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    if first["loc"] and first["loc"][0] != "bbox":
        return f"bad {first['loc'][0]} ({first['type']})"
    return _BOX_PROBLEMS.get(first["type"], first["type"])


def parse_record(data: Any, file: str | None = None, index: int | None = None) -> FineHARDRecord:
    """Validate one record; a failure is a :class:`DataError` naming the file, the record index and the field.

    A malformed box (a 3-number or non-numeric ``bbox``, a box that is not an object) drops that box, not the
    record: the others are kept and the dropped ones are listed in :attr:`FineHARDRecord.dropped_boxes`."""
    dropped: list[tuple[int, str]] = []
    if isinstance(data, dict) and isinstance(data.get("bbox_info"), list):
        kept = []
        for k, item in enumerate(data["bbox_info"]):
            try:
                kept.append(BoxInfo.model_validate(item))
            except ValidationError as err:
                dropped.append((k, _box_problem(err)))
        data = {**data, "bbox_info": kept}
    try:
        record = FineHARDRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise DataError(first["msg"], file, index, field) from err
    record._dropped_boxes = dropped
    return record
