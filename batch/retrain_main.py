"""spark-submit entry of the weekly retrain (no master hard-coded: spark-submit decides).

    spark-submit --py-files dist/dsgd_pyfiles.zip batch/retrain_main.py --conf prod.toml \\
        --as-of 2024-06-02T00:00:00Z --policy replace

Same options and exit codes as ``dsgd retrain`` (0 ok or already done, 1 failure, 2 bad config,
3 no events up to the as-of).
"""

from __future__ import annotations

import sys

from batch.retrain import main as _retrain
from batch.retrain_config import RetrainConfig
from dsgd.core.config import Config


def main(spark, cfg: Config, *, as_of: str | int | None = None, retrain: RetrainConfig | None = None) -> int:
    """Run the retrain on ``spark`` (None: build the session from ``cfg``); returns the exit code."""
    return _retrain(spark, cfg, as_of=as_of, retrain=retrain)


if __name__ == "__main__":
    import batch.cli  # noqa: F401 - registers the command (no entry points under --py-files)
    from dsgd.cli import main as cli_main

    sys.exit(cli_main(["retrain", *sys.argv[1:]]))
