"""Every Python and SQL snippet of README.md and docs/*.md runs, as written, against real tables: a small
stream (with bad records), an export and a retrain tracked in MLflow write them first, in a working
directory of their own, so the snippets' ``profile="local"`` paths (``.dsgd/warehouse``) are the test's.
The snippets of one document run in order in one namespace, as a reader runs them.

What a reader brings (their own DataFrames) comes from :data:`GIVENS`; placeholders a reader replaces
(a cluster path, a version number) from :data:`PLACEHOLDERS`. Nothing else is changed."""

from __future__ import annotations

import pytest

from tests.doc_blocks import code_blocks
from tests.kafka.stream_helpers import BAD_RECORDS, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


#: Setup for the names a snippet expects the reader to have, keyed by the snippet's first line.
GIVENS = {
    "from dsgd import DSGD": "events_df = known_stream(400)\nspark_df = spark.createDataFrame(events_df)",
    "from pyspark.ml import Pipeline, PipelineModel": (
        "import numpy as np\n_r = known_stream(300)\n_r['rating'] = np.random.default_rng(0).integers(1, 6, len(_r))"
        ".astype(float)\nratings = spark.createDataFrame(_r[['user', 'item', 'rating']])\n"
        "test = ratings.limit(20)"),
}
#: Text a reader replaces with their own: (snippet's first line, old, new); new is formatted with tmp.
PLACEHOLDERS = [
    ("from pyspark.ml import Pipeline, PipelineModel", "hdfs:///models/dsgd", "{tmp}/models/dsgd"),
    ("SELECT side, id, r.* FROM (", "/data/warehouse/factors", "{tmp}/.dsgd/warehouse/factors"),
    ("from dsgd import FactorStore, table_path", "version=12", "version=1"),
]


@pytest.fixture(scope="module")
def written(spark, kafka_broker, base_config, tmp_path_factory):
    """A working directory whose .dsgd/warehouse holds a streamed model, an export and a tracked retrain."""
    import os

    from batch.serving import export_top_k
    from dsgd.cli.main import main as cli
    from streaming.trainer import StreamTrainer

    tmp = tmp_path_factory.mktemp("docs")
    topic = "docs-snippets"
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker.bootstrap, topic, known_stream(600), BAD_RECORDS[:3])
    cfg = base_config.replace(app={"warehouse": str(tmp / ".dsgd/warehouse"), "checkpoint_root": str(tmp / "ckpt")},
                              kafka={"topic": topic, "bootstrap_servers": kafka_broker.bootstrap,
                                     "max_offsets_per_trigger": 200},
                              stream={"trigger": "available_now"}, model={"engine": "local"})
    assert StreamTrainer(spark, cfg).run(timeout_s=300) == 0
    export_top_k(spark, cfg, k=5)
    old = os.getcwd()
    os.chdir(tmp)
    try:
        # the JVM keeps the directory it started in: Spark gets the warehouse as an absolute path
        assert cli(["retrain", "--profile", "local", "--as-of", "now", "--set", f'app.warehouse="{cfg.app.warehouse}"',
                    "--set", "retrain.mlflow_tracking_uri=sqlite:///mlflow.db"]) == 0
        yield tmp
    finally:
        os.chdir(old)


SNIPPETS = code_blocks(("python", "sql"))
_SCOPES: dict[str, dict] = {}


def test_the_docs_hold_the_snippets_this_test_knows():
    firsts = {body.splitlines()[0] for _, _, body in SNIPPETS}
    assert set(GIVENS) <= firsts and {p[0] for p in PLACEHOLDERS} <= firsts, firsts


@pytest.mark.parametrize(("where", "lang", "body"), SNIPPETS, ids=[w for w, _, _ in SNIPPETS])
def test_a_documented_snippet_runs_as_written(where, lang, body, spark, written, capsys):
    first = body.splitlines()[0]
    for key, old, new in PLACEHOLDERS:
        if key == first:
            assert old in body, (where, old)
            body = body.replace(old, new.format(tmp=written))
    if lang == "sql":
        spark.sql(body).collect()
        return
    # a reader runs a document's snippets in order in one session: one namespace per document
    scope = _SCOPES.setdefault(where.split(":")[0], {"spark": spark, "known_stream": known_stream})
    exec(compile(GIVENS.get(first, ""), f"{where} (givens)", "exec"), scope)  # noqa: S102
    exec(compile(body, where, "exec"), scope)  # noqa: S102 - the point: run the docs' code
    capsys.readouterr()
