"""fgclip-data: FineHARD and ShareGPT4V tooling, FG-Shapes, datasets and collators for fgclip training.

This package never imports ``fgclip_model``: collators take any tokenizer / image processor by duck typing.
"""

from fgclip_data.__about__ import __version__
from fgclip_data.batch import Stage2Batch
from fgclip_data.collate import FGCLIP2Collator, FGCLIPCollator
from fgclip_data.datasets import FineHARDDataset, FineHARDShards, FineHARDStream, ImageResize
from fgclip_data.finehard.paths import resolve_image_path
from fgclip_data.finehard.reader import iter_records, read_records
from fgclip_data.finehard.samples import Sample, SampleOptions, Skipped
from fgclip_data.report import DataError, Report
from fgclip_data.schema import BoxInfo, FineHARDRecord
from fgclip_data.store.dataset import FineHARDStore

__all__ = [
    "BoxInfo",
    "DataError",
    "FGCLIP2Collator",
    "FGCLIPCollator",
    "FineHARDDataset",
    "FineHARDRecord",
    "FineHARDShards",
    "FineHARDStore",
    "FineHARDStream",
    "ImageResize",
    "Report",
    "Sample",
    "SampleOptions",
    "Skipped",
    "Stage2Batch",
    "__version__",
    "iter_records",
    "read_records",
    "resolve_image_path",
]
