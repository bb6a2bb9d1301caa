"""A FineHARD record store: validated records in memory-mappable Arrow IPC files, shared by every rank and loader
worker of a node (``fgclip-data store build`` / ``store verify``; :class:`~fgclip_data.store.dataset.FineHARDStore`).

One module per job: :mod:`.schema` (the Arrow layout of a record), :mod:`.manifest` (what a store holds and where
it came from), :mod:`.writer` (the resumable build), :mod:`.reader` (zero-copy access to record ``i``),
:mod:`.dataset` (the map-style torch dataset).
"""

from fgclip_data.store.manifest import SCHEMA_VERSION, StoreError, is_store
from fgclip_data.store.reader import StoreReader
from fgclip_data.store.writer import build_store, verify_store

__all__ = ["SCHEMA_VERSION", "StoreError", "StoreReader", "build_store", "is_store", "verify_store"]
