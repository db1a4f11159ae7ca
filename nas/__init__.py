"""Hardware-aware neural architecture search on once-for-all supernets."""

from nas.errors import NASError

__version__ = "0.1.0"
__all__ = ["NASError", "__version__"]
