"""fgclip_data."""

from fgclip_data.__about__ import __version__

__all__ = ["__version__"]
