"""``packfleet doctor``: check a master or worker home and say, for each problem, the command that fixes it.

The seed's certificate procedures are manual, and each step done wrong leaves a node that fails
later with an obscure TLS error. ``doctor`` finds those states up front::

    report = run_doctor(home)
    for finding in report.errors:
        print(finding.check, finding.message, finding.fix)
    # worker.master-served  thumbprint mismatch: the master at 10.0.0.5:8391 serves certificate
    #   9F0A... but this worker pins MasterHttpsCertThumbprint 3C1B...
"""

from packfleet.doctor._checks_master import check_master
from packfleet.doctor._checks_worker import SKEW_ERROR_SECONDS, SKEW_WARNING_SECONDS, check_worker
from packfleet.doctor._common import unit_user
from packfleet.doctor._doctor import run_doctor
from packfleet.doctor._findings import Finding, Report, Severity
from packfleet.trust import Account

__all__ = [
    "SKEW_ERROR_SECONDS",
    "SKEW_WARNING_SECONDS",
    "Account",
    "Finding",
    "Report",
    "Severity",
    "check_master",
    "check_worker",
    "run_doctor",
    "unit_user",
]
