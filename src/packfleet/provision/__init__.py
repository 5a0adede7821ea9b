"""Node set-up, as SSIS setup's Scale Out pages do it: ``master init``, ``worker init``, ``worker join``."""

from packfleet.provision._join import WorkerJoin, join_worker
from packfleet.provision._master import ADMIN_CN, MASTER_CER, MasterInit, init_master
from packfleet.provision._worker import (
    WORKER_CER,
    WorkerInit,
    create_worker_certificate,
    init_worker,
    trust_master_certificate,
)

__all__ = [
    "ADMIN_CN",
    "MASTER_CER",
    "WORKER_CER",
    "MasterInit",
    "WorkerInit",
    "WorkerJoin",
    "create_worker_certificate",
    "init_master",
    "init_worker",
    "join_worker",
    "trust_master_certificate",
]
