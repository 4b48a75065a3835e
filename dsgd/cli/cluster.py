"""``dsgd cluster start|stop|status``: a local Spark standalone cluster for trying cluster mode."""

from __future__ import annotations

import argparse
import json

from dsgd.cli.registry import command
from dsgd.ops.standalone import ClusterError, StandaloneCluster


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "status"), help="start/stop the local standalone cluster")
    p.add_argument("--home", default=".dsgd/cluster", help="state folder (pids, logs, work dirs)")
    p.add_argument("--workers", type=int, default=2, help="number of workers")
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--memory", default="1g", help="memory per worker (e.g. 1g)")
    p.add_argument("--port", type=int, default=7077, help="master port (0 = a free port)")
    p.add_argument("--webui-port", type=int, default=8080, help="master web UI port (0 = a free port)")


@command("cluster", "manage a local Spark standalone cluster (start|stop|status)", _cluster_args)
def cmd_cluster(args: argparse.Namespace, cfg) -> int:
    if args.action == "start":
        cluster = StandaloneCluster(args.home, workers=args.workers, cores=args.cores, memory=args.memory,
                                    master_port=args.port, webui_port=args.webui_port)
        cluster.start()
        cluster.procs = []  # leave it running after this process exits
        print(json.dumps(cluster.status()))
        return 0
    try:
        cluster = StandaloneCluster.attach(args.home)
    except ClusterError as exc:
        print(json.dumps({"home": args.home, "running": False, "error": str(exc)}))
        return 0 if args.action == "stop" else 3
    if args.action == "stop":
        cluster.stop()
        print(json.dumps(cluster.status()))
        return 0
    st = cluster.status()
    print(json.dumps(st))
    return 0 if st["running"] else 3
