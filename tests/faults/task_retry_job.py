"""Fit the Spark DSGD engine on a fixed synthetic set and save the factors (fault suite, item 1).

    python tests/faults/task_retry_job.py OUT.npz [MASTER]

With a marker folder and master ``local[2,3]`` (task retries on), :func:`fail_first_run` is passed to
the engine as its task hook: the first run of every DSGD task raises; the retried attempts must give
exactly the factors of a run without failures.

    python tests/faults/task_retry_job.py OUT.npz MASTER MARKER_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fail_first_run(marker_dir: str):
    """A task hook failing the first run of each task. A shuffle-stage task fails at attempt 0; a re-run
    barrier stage keeps its stage id and starts its tasks at attempt 0 again, so its first run is
    remembered by a marker file per (stage, task)."""
    import os

    def hook(ctx, exchange: str) -> None:
        if exchange == "shuffle":
            if ctx.attemptNumber() == 0:
                raise RuntimeError(f"injected failure of partition {ctx.partitionId()} stage {ctx.stageId()} attempt 0")
            return
        marker = os.path.join(marker_dir, f"barrier-stage{ctx.stageId()}-task{ctx.partitionId()}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"injected failure of barrier task {ctx.partitionId()} stage {ctx.stageId()} "
                               "(first run)")

    return hook


def fit_factors(spark, task_hook=None) -> dict:
    """An implicit fit (2 epochs x 2 strata, 3 sampled negatives per event: the kernel's seeds matter) with
    the Spark engine, once per exchange (one barrier stage; four shuffle stages); arrays keyed by name."""
    import numpy as np

    from dsgd.api import DSGD
    from dsgd.evaluation.synthetic import generate_stream

    out = {}
    for exchange in ("barrier", "shuffle"):
        pdf = generate_stream(2000, n_users=120, n_items=80, seed=11, implicit=True)
        df = spark.createDataFrame(pdf[["user", "item", "rating", "ts"]])
        est = DSGD(rank=8, kind="implicit", lr=0.02, reg=0.01, epochs=2, blocks=2, negatives=3, seed=7,
                   engine="spark", spark_exchange=exchange)
        model = est.fit(df, task_hook=task_hook)
        for side in ("user", "item"):
            ids = np.asarray(getattr(model, f"{side}_ids")).astype(str)
            order = np.argsort(ids, kind="stable")
            out[f"{exchange}_{side}_ids"] = ids[order]
            out[f"{exchange}_{side}_vecs"] = np.asarray(getattr(model, f"{side}_vecs"))[order]
            out[f"{exchange}_{side}_bias"] = np.asarray(getattr(model, f"{side}_bias"))[order]
            out[f"{exchange}_{side}_count"] = np.asarray(getattr(model, f"{side}_count"))[order]
        out[f"{exchange}_loss"] = np.asarray([h["loss"] for h in model.history])
    return out


def main(argv: list[str]) -> int:
    import numpy as np

    from dsgd.core.config import load_config
    from dsgd.store.session import build_session

    out, master, marker_dir = argv[0], argv[1], argv[2]
    cfg = load_config(profile="local", overrides=[f'spark.master="{master}"', 'spark.driver_memory="1g"'])
    spark = build_session(cfg)
    try:
        np.savez(out, **fit_factors(spark, fail_first_run(marker_dir)))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
