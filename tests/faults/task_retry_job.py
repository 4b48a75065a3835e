"""Fit the Spark DSGD engine on a fixed synthetic set and save the factors (fault suite, item 1).

    python tests/faults/task_retry_job.py OUT.npz [MASTER]

Run with ``DSGD_FAIL_FIRST_ATTEMPT=1`` and master ``local[2,3]`` (task retries on) the first attempt of
every DSGD task raises; the retried attempts must give exactly the factors of a run without failures.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fit_factors(spark) -> dict:
    """An explicit fit (2 epochs x 2 strata) with the Spark engine, once per exchange (one barrier stage;
    four shuffle stages); arrays keyed by name."""
    import numpy as np

    from dsgd.model import DSGD
    from dsgd.synthetic import generate_stream

    out = {}
    for exchange in ("barrier", "shuffle"):
        pdf = generate_stream(2000, n_users=120, n_items=80, seed=11, implicit=False)
        df = spark.createDataFrame(pdf[["user", "item", "rating", "ts"]])
        est = DSGD(rank=8, kind="explicit", lr=0.02, reg=0.01, epochs=2, blocks=2, negatives=3, seed=7,
                   engine="spark", spark_exchange=exchange)
        model = est.fit(df)
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

    from dsgd.config import load_config
    from dsgd.session import build_session

    out, master = argv[0], argv[1] if len(argv) > 1 else "local[2,3]"
    cfg = load_config(profile="local", overrides=[f'spark.master="{master}"', 'spark.driver_memory="1g"'])
    spark = build_session(cfg)
    try:
        np.savez(out, **fit_factors(spark))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
