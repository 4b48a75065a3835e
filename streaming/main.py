"""spark-submit entry of the streaming trainer.

    spark-submit --py-files dist/dsgd_pyfiles.zip streaming/main.py --conf my.toml --set kafka.topic=events

No master is hard-coded: spark-submit (or ``spark.master`` in the config) decides.
"""

from __future__ import annotations

import logging
import sys

from dsgd.core.config import Config
from streaming.faults import FaultHook

log = logging.getLogger("dsgd.stream")


def main(spark, cfg: Config, *, timeout_s: float | None = None, fault_hook: FaultHook | None = None) -> int:
    """Run the trainer until the stream ends (availableNow), SIGINT/SIGTERM or ``timeout_s``
    (``fault_hook``: tests only, see :mod:`streaming.faults`)."""
    from dsgd.store.session import build_session
    from streaming.trainer import StreamTrainer

    spark = spark or build_session(cfg)
    return StreamTrainer(spark, cfg, fault_hook=fault_hook).run(timeout_s=timeout_s)


if __name__ == "__main__":
    import streaming.cli  # noqa: F401 - registers the command (no entry points under --py-files)
    from dsgd.cli import main as cli_main

    sys.exit(cli_main(["stream", *sys.argv[1:]]))
