"""fgclip_longclip."""

from fgclip_longclip.__about__ import __version__

__all__ = ["__version__"]
