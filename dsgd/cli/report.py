"""``dsgd report``: one self-contained HTML page about the deployment, from its warehouse."""

from __future__ import annotations

import argparse
import json

from dsgd.cli.registry import command
from dsgd.core.config import Config


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="dsgd-report.html", help="HTML file to write (default: dsgd-report.html)")
    p.add_argument("--days", type=float, default=None,
                   help="only the last DAYS days of batches, model versions and retrains (default: everything)")


@command("report", "write an HTML page (DCG, events/s, batch phases, lag, quarantine, model versions, retrains) "
         "from the warehouse", _report_args)
def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from dsgd.ops.report import write_report
    from dsgd.store.session import build_session

    if args.days is not None and args.days <= 0:
        print(json.dumps({"error": f"--days must be > 0, got {args.days}"}))
        return 2
    print(json.dumps(write_report(build_session(cfg), cfg, args.out, days=args.days)))
    return 0
