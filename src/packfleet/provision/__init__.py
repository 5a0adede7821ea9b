"""Node set-up, as SSIS setup's Scale Out pages do it: ``master init``, ``worker init``, ``worker join``."""

from packfleet.provision._join import WorkerJoin, join_worker
from packfleet.provision._master import ADMIN_CN, MASTER_CER, MasterInit, init_master
from packfleet.provision._node import NodeExport, export_node, init_master_from_node, uncovered_names
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
    "NodeExport",
    "WorkerInit",
    "WorkerJoin",
    "create_worker_certificate",
    "export_node",
    "init_master",
    "init_master_from_node",
    "init_worker",
    "join_worker",
    "trust_master_certificate",
    "uncovered_names",
]
