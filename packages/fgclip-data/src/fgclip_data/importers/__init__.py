"""Importers: your own data → FineHARD-format records with a seeded train / val split (``fgclip-data import``).

One module per source layout, each registered with :func:`register_source`; the conversion rules (captions,
boxes, hard negatives) live in :mod:`.convert`, the writing and resuming in :mod:`.engine`.
"""

from fgclip_data.importers import coco, folder, odvg, table, webdataset  # noqa: F401  (register the sources)
from fgclip_data.importers.base import SOURCES, Candidate, Region, Source, choose_captions, register_source
from fgclip_data.importers.engine import ImportOptions, run_import
from fgclip_data.importers.negatives import hard_negatives, is_false

__all__ = [
    "SOURCES",
    "Candidate",
    "ImportOptions",
    "Region",
    "Source",
    "choose_captions",
    "hard_negatives",
    "is_false",
    "register_source",
    "run_import",
]
