"""Example Airflow DAG: weekly retrain + top-K export with SparkSubmitOperator.

An example file, not imported by the project or its tests (Airflow is not a dependency). Copy it to
your DAGs folder and adapt paths/connection. Exit codes of batch/retrain_main.py: 0 ok (or already
done for this as-of, so Airflow retries are safe), 1 failure, 2 bad config, 3 no events up to the
as-of (fails the task: nothing was trained; mark it skipped with an on_failure policy if preferred).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG  # type: ignore[import-not-found]
from airflow.providers.apache.spark.operators.spark_submit import (  # type: ignore[import-not-found]
    SparkSubmitOperator,
)

DSGD_HOME = "/opt/dsgd"
COMMON = {
    "conn_id": "spark_default",
    "py_files": f"{DSGD_HOME}/dist/dsgd_pyfiles.zip",
    "jars": f"{DSGD_HOME}/.jars/spark/delta-spark_2.13-4.0.0.jar,{DSGD_HOME}/.jars/spark/delta-storage-4.0.0.jar",
    "conf": {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
             "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"},
}

with DAG(
    dag_id="dsgd_weekly_retrain",
    schedule="0 3 * * 0",
    start_date=datetime(2024, 1, 7),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    retrain = SparkSubmitOperator(
        task_id="retrain",
        application=f"{DSGD_HOME}/batch/retrain_main.py",
        # the logical date's midnight (UTC) is the cut-off: a retry or backfill re-uses the same as-of
        application_args=["--conf", f"{DSGD_HOME}/conf/prod.toml", "--as-of", "{{ ds }}T00:00:00Z"],
        **COMMON,
    )
    export = SparkSubmitOperator(
        task_id="export_top_k",
        application=f"{DSGD_HOME}/dsgd/__main__.py",
        application_args=["export", "--conf", f"{DSGD_HOME}/conf/prod.toml"],
        **COMMON,
    )
    retrain >> export
