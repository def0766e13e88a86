"""attnrec: the shared core (settings, lake paths, data contracts, CLI)."""

__version__ = "0.1.0"
