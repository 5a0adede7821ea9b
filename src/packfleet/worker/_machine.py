"""What a worker measures about its machine: the load that gates leasing and the facts it reports.

SSIS's worker refuses new tasks while the CPU is above ``TaskRequestMaxCPU`` or free memory is below
``TaskRequestMinMemory``; the agent asks a :class:`MachineProbe` for both before each lease, so tests
can hand it a probe with the numbers they want instead of loading the test machine.
"""

from __future__ import annotations

import getpass
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Protocol

import psutil


class MachineProbe(Protocol):
    """The measurements the agent needs; :class:`PsutilProbe` takes them from the live machine."""

    def cpu_percent(self) -> float:
        """Machine-wide CPU use in percent (0-100)."""
        ...

    def memory_free_mb(self) -> float:
        """Memory available to new processes, in MB (psutil's ``available``, not ``free``)."""
        ...

    def ips(self) -> list[str]:
        """The machine's addresses, as the master shows them in the worker list."""
        ...

    def machine_name(self) -> str: ...

    def user_account(self) -> str: ...


class PsutilProbe:
    """Measurements of this machine through :mod:`psutil`.

    CPU use is averaged over windows of at least :attr:`window` seconds, and free memory read at most
    once per window: psutil's non-blocking
    ``cpu_percent`` reports the use since its previous call, which over a few milliseconds (two
    checks in a row) is 0 or 100 and nothing in between. The first value comes from a short
    blocking sample, taken once when the probe is made.
    """

    window = 1.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cpu = float(psutil.cpu_percent(interval=0.1))
        self._sampled = clock()
        self._memory = 0.0
        self._memory_at = -float("inf")

    def cpu_percent(self) -> float:
        if self._clock() - self._sampled >= self.window:
            self._cpu = float(psutil.cpu_percent(interval=None))
            self._sampled = self._clock()
        return self._cpu

    def memory_free_mb(self) -> float:
        # Read at most once per window, like the CPU: the gate asks before every lease request,
        # hundreds a second under load, and each reading parses /proc/meminfo (make bench).
        if self._clock() - self._memory_at >= self.window:
            # `available` counts reclaimable page cache; `free` would make a busy file server look full.
            self._memory = float(psutil.virtual_memory().available) / (1024 * 1024)
            self._memory_at = self._clock()
        return self._memory

    def ips(self) -> list[str]:
        found: list[str] = []
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                text = address.address.split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
                try:
                    ip = ipaddress.ip_address(text)
                except ValueError:
                    continue
                if not (ip.is_loopback or ip.is_link_local) and str(ip) not in found:
                    found.append(str(ip))
        return found

    def machine_name(self) -> str:
        return socket.gethostname()

    def user_account(self) -> str:
        return getpass.getuser()
