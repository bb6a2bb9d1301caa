"""The map-style torch dataset over a store: the same :class:`~fgclip_data.finehard.samples.Sample` (or
``Skipped``) as :class:`~fgclip_data.datasets.FineHARDDataset` gives for the records the store was built from,
with the same seeded region-caption draws, so the collators, samplers and losses cannot tell them apart.

Nothing is read at construction but the manifest; each process maps the store on its first item. Shuffling,
the split over ranks and loader workers and mid-epoch resume are the sampler's (e.g. fgclip-train's
``ResumableBatchSampler``): a map-style dataset is indexed, never iterated.
"""

from __future__ import annotations

from pathlib import Path

from fgclip_data.datasets import ImageResize, RecordDataset, _SampleMaker
from fgclip_data.finehard.samples import SampleOptions
from fgclip_data.store.reader import StoreReader


class FineHARDStore(RecordDataset):
    """Samples of a record store (``fgclip-data store build``); ``image_root``: the folder ``f_path`` resolves
    against (images are read where they are). Call :meth:`set_epoch` to redraw the region-caption choices."""

    def __init__(
        self,
        store: str | Path | StoreReader,
        image_root: str | Path,
        options: SampleOptions | None = None,
        resize: ImageResize | None = None,
        seed: int = 0,
    ) -> None:
        self.reader = store if isinstance(store, StoreReader) else StoreReader(store)
        self.maker = _SampleMaker(image_root, options, resize, seed)

    def __len__(self) -> int:
        return len(self.reader)

    def record(self, index: int):
        return self.reader.record(index)

    def __getitem__(self, index: int):
        return self.maker.make(self.reader.view(index))
