"""Item 1: a DSGD task whose first attempt fails is retried by Spark and gives the same factors (both the
barrier exchange, whose stage Spark re-runs whole, and the shuffle exchange, whose tasks it retries)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.faults.helpers import PYTHON, ROOT, cli_env
from tests.faults.task_retry_job import fit_factors

pytestmark = [pytest.mark.faults, pytest.mark.spark]


def test_task_retry_after_a_failed_first_attempt_gives_the_factors_of_a_run_without_failure(spark, tmp_path):
    out = tmp_path / "retry.npz"
    proc = subprocess.run([PYTHON, str(ROOT / "tests/faults/task_retry_job.py"), str(out), "local[2,3]", str(tmp_path)],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the hook really fired: Spark logged lost task attempts carrying the injected error, then retried them
    lost = [ln for ln in proc.stderr.splitlines() if "Lost task" in ln]
    assert lost, "no task attempt failed: does the engine still call its task_hook?"
    assert "injected failure of barrier task" in proc.stderr  # the barrier stage was re-run whole
    assert "injected failure of partition" in proc.stderr  # the shuffle engine's tasks were retried
    assert "Task 0 in stage" not in proc.stderr or "failed 3 times" not in proc.stderr
    # the JVM this process started logs by conf/log4j2.properties: Spark's warnings above pass, its
    # start-up chatter does not
    for chatter in ("Using Spark's default log4j profile", "WARN Utils:", "WARN NativeCodeLoader:",
                    'Setting default log level to "WARN"'):
        assert chatter not in proc.stderr, chatter

    retried = dict(np.load(out))
    clean = fit_factors(spark)  # the same fits, fault-free, in the session's local[2]
    assert sorted(retried) == sorted(clean)
    for name, want in clean.items():  # bit for bit: a retried or re-run task recomputes the same floats
        np.testing.assert_array_equal(retried[name], want, err_msg=name)
