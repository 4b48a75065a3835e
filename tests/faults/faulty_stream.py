"""``dsgd stream`` with a fault hook, for crash tests that kill or fail the trainer process itself.

    python -m tests.faults.faulty_stream POINT:BATCH[,POINT:BATCH...] kill|raise  <dsgd stream options>

Parses the options with the real CLI parser and config loader, then runs the same entry
(``streaming.main.main``) as ``dsgd stream``, with :func:`streaming.faults.fault_at` as its hook.
"""

from __future__ import annotations

import sys

from dsgd.cli.main import build_parser, setup_logging
from dsgd.core.config import load_config
from streaming.faults import fault_at
from streaming.main import main as stream_main


def main(argv: list[str]) -> int:
    spec, mode, rest = argv[0], argv[1], argv[2:]
    targets = {(p.split(":")[0], int(p.split(":")[1])) for p in spec.split(",")}
    args = build_parser().parse_args(["stream", *rest])
    cfg = load_config(profile=args.profile, files=args.conf, overrides=args.overrides)
    if args.available_now:
        cfg = cfg.replace(stream={"trigger": "available_now"})
    setup_logging(cfg.app.log_level)
    return stream_main(None, cfg, timeout_s=args.timeout, fault_hook=fault_at(targets, kill=mode == "kill"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
