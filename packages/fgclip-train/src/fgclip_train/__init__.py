"""fgclip_train."""

from fgclip_train.__about__ import __version__

__all__ = ["__version__"]
