"""FG-Shapes, the embedded default data set: the generator, the folder handle and its evaluation definitions."""

from fgclip_data.fgshapes.folder import FGShapesFolder, cache_dir

__all__ = ["FGShapesFolder", "cache_dir"]
