"""The homes every trust and doctor test starts from (tests/trust/support.py)."""

from trust.support import master_home, worker_home

__all__ = ["master_home", "worker_home"]
