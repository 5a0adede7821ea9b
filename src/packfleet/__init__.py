"""packfleet: SSIS Scale Out for Linux — a master, a fleet of workers, mutual TLS pinned by thumbprint."""

from packfleet.errors import PackfleetError

__version__ = "0.1.0"
__all__ = ["PackfleetError", "__version__"]
