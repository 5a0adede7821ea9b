"""``make demo``: a master and two workers on this machine, connected by hand as the seed does.

Every step is a real ``packfleet`` command, printed before it runs, so the demo doubles as a
walk-through. The state (homes, stores, settings, catalog, logs) stays behind for inspection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import tempfile
from pathlib import Path

from packfleet.errors import PackfleetError
from packfleet.localcluster import LocalCluster, sample_project, sigterm_exits


def _say(text: str) -> None:
    print(text, flush=True)


def _step(title: str) -> None:
    _say(f"\n== {title}")


def _show_summary(warehouse: Path) -> None:
    with contextlib.closing(sqlite3.connect(warehouse)) as db:
        rows = db.execute("SELECT region, orders, revenue FROM region_summary ORDER BY region").fetchall()
    _say("  region_summary in $STATE/warehouse.db:")
    for region, orders, revenue in rows:
        _say(f"    {region:<8} {orders:>3} orders  {revenue:>10.2f}")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="packfleet-demo-"))
    project = sample_project()
    warehouse = root / "warehouse.db"
    _say(f"packfleet demo: state in {root}  (shown below as $STATE)")
    # `kill <pid>` of the demo stops every node on the way out of the `with`, as Ctrl+C does.
    with sigterm_exits(), LocalCluster(root, echo=_say, env={"COLUMNS": "150"}) as cluster:
        try:
            _step("1. Master: certificate, binding, settings (SSIS setup's master page)")
            cluster.init_master()
            cluster.cli(cluster.master.home, "binding", "show", "--port", str(cluster.port))
            cluster.start_master()

            _step("2. Workers: certificate CN=name;CN=ip, master.cer into Root, then added on the master")
            for name, ip in (("worker1", "127.0.0.2"), ("worker2", "127.0.0.3")):
                cluster.add_worker(name, ip)
                cluster.start_worker(name)
            cluster.wait_for_workers(["worker1", "worker2"])
            cluster.cli(cluster.master.home, "manager", "worker", "list")

            _step("3. Deploy the sample project")
            cluster.cli(cluster.master.home, "deploy", str(project))

            _step("4. Run the ETL on any worker, following its logs")
            # Both workers run on this machine, so one warehouse file can collect every run's rows.
            target = ("--param", f"target_db=sqlite:///{warehouse}")
            cluster.cli(cluster.master.home, "run", "default/etl/load", *target, "--wait")

            _step("5. Run it on a chosen worker (worker2), then the SQL summary")
            worker2 = cluster.agent_id("worker2")
            cluster.cli(
                cluster.master.home, "run", "default/etl/load", *target, "--worker", worker2, "--wait"
            )
            cluster.cli(
                cluster.master.home, "run", "default/etl/summary", *target, "--worker", worker2, "--wait"
            )
            _show_summary(warehouse)

            _step("6. A package that fails on purpose: run --wait exits non-zero")
            failed = cluster.cli(cluster.master.home, "run", "default/etl/fail", "--wait", check=False)
            _say(f"  (exit code {failed.returncode}, as expected)")

            _step("7. A third worker joins with one command (a join token pins the master certificate)")
            token = cluster.cli(cluster.master.home, "manager", "token", "create", "--enable", as_json=True)
            cluster.join_worker("worker3", "127.0.0.4", token["token"])
            cluster.start_worker("worker3")
            cluster.wait_for_workers(["worker3"])
            worker3 = cluster.agent_id("worker3")
            run_on_worker3 = ("run", "default/etl/load", *target, "--worker", worker3, "--wait")
            cluster.cli(cluster.master.home, *run_on_worker3)

            _step("8. Rotate the master certificate: no restart, no dropped connection, no maintenance")
            cluster.cli(cluster.master.home, "manager", "rotate", "master-cert")
            cluster.cli(cluster.master.home, "run", "default/etl/load", *target, "--wait")
            cluster.cli(cluster.master.home, "manager", "certs")

            _step("9. Executions and the audit log")
            cluster.cli(cluster.master.home, "executions", "list")
            cluster.cli(cluster.master.home, "manager", "audit", "--limit", "12")
        except PackfleetError as exc:
            _say(f"\ndemo failed: {exc}")
            for node in [cluster.master, *cluster.workers.values()]:
                _say(f"--- {node.name} log (last lines)\n{cluster.tail(node)}")
            return 1
        _step("10. Stopping the workers and the master (SIGTERM)")
    _say(f"\nDone. State left in {root}:")
    _say("  master/  MasterSettings.config, bindings.json, certs/{My,Root}, catalog.db, master.cer")
    _say("  worker1-3/  WorkerSettings.config, certs/{My,Root}, tasks/, logcache/, worker.cer")
    _say("  *.log    each node's log;  warehouse.db  the ETL's output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
