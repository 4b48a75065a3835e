"""DSGD as a ``pyspark.ml`` stage: Params declared the MLlib way, Pipeline, tuning, MLWritable/MLReadable.

``dsgd.api.ml.DSGD`` is a ``pyspark.ml.Estimator`` whose :class:`~pyspark.ml.param.Param` s are GENERATED
from the one declaration of the hyper-parameters (:class:`dsgd.core.config.ModelConfig`, through
:mod:`dsgd.api.params`): same names in MLlib's camelCase (``rank``, ``lrSchedule``, ``userCol``, ...),
same defaults, same docs and the same checks (a bad value raises ``ValueError`` naming what is allowed).
``fit`` trains the plain estimator :class:`dsgd.api.DSGD` and returns :class:`DSGDModel`, a
``pyspark.ml.Model`` whose ``transform`` adds ``predictionCol`` (and, with ``rankCol`` set, the rank of
each row's item among all items for its user: what the ranking evaluator needs). Both save to and load
from any Hadoop-compatible path (local, ``hdfs://``, ``s3a://``, ...) the way MLlib's
``DefaultParamsWriter``/``DefaultParamsReader`` do, so a ``Pipeline``/``PipelineModel`` holding them
saves and loads too; ``CrossValidator``/``TrainValidationSplit`` tune them with
``RegressionEvaluator(metricName="rmse")`` (explicit) or :class:`RankingEvaluator` (implicit).

Why a second class: in ``pyspark.ml`` ``est.rank`` is a ``Param`` object (``ParamGridBuilder().addGrid(
est.rank, [8, 16])``, ``est.getRank()``), while the plain :class:`dsgd.api.DSGD` has always returned the
value (``DSGD(rank=8).rank == 8``). One class cannot be both, so, as Spark itself keeps
``pyspark.mllib.recommendation.ALS`` beside ``pyspark.ml.recommendation.ALS``, the ``pyspark.ml`` face
has its own module and the plain API does not change. ``DSGDModel.model`` is the plain
:class:`dsgd.api.DSGDModel` (``recommend``, ``predict``, ``partial_fit``, ...).

Example
-------
>>> from pyspark.ml import Pipeline
>>> from pyspark.ml.feature import SQLTransformer
>>> from dsgd.api.ml import DSGD
>>> clean = SQLTransformer(statement="SELECT user, item, rating FROM __THIS__ WHERE rating IS NOT NULL")
>>> model = Pipeline(stages=[clean, DSGD(kind="explicit", rank=8, epochs=15, engine="local")]).fit(train)
>>> model.write().overwrite().save("hdfs:///models/dsgd"); PipelineModel.load("hdfs:///models/dsgd")
"""

from __future__ import annotations

import copy
from typing import Any

from pyspark.ml import Estimator, Model
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dsgd.api import params as P
from dsgd.api.estimator import DSGD as PlainDSGD
from dsgd.api.ml_io import ModelReader, ModelWriter
from dsgd.api.ml_rank import rank_column
from dsgd.api.model import DSGDModel as PlainModel


def camel(name: str) -> str:
    """MLlib's spelling of a declared name: ``cold_start_strategy`` -> ``coldStartStrategy``."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


#: camelCase Param name -> the declared (snake_case) name, for every parameter of the plain estimator.
DECLARED = {camel(n): n for n in P.PARAM_NAMES}
#: The pyspark.ml face's own Params: (default, doc).
ML_OWN = {"predictionCol": ("prediction", "Output column of the predicted score (double)."),
          "rankCol": ("", "Output column of the 1-based rank of the row's item among all items scored for "
                      "its user (null for unknown users or items), for RankingEvaluator; empty = not computed.")}


def _converter(name: str):
    return lambda value: P.check(name, value)


class _DSGDParams(Params):
    """The Params of :class:`DSGD` and :class:`DSGDModel`, generated below from the declarations."""

    def _declared_defaults(self) -> None:
        self._setDefault(**{ml: P.default_of(n) for ml, n in DECLARED.items()},
                         **{ml: d for ml, (d, _doc) in ML_OWN.items()})

    def plain_params(self) -> dict[str, Any]:
        """The parameters as :class:`dsgd.api.DSGD` takes them (declared snake_case names)."""
        return {n: self.getOrDefault(ml) for ml, n in DECLARED.items()}


def _accessors(ml_name: str) -> tuple[Any, Any]:
    def getter(self: Params) -> Any:
        return self.getOrDefault(ml_name)

    def setter(self: Params, value: Any) -> Params:
        return self._set(**{ml_name: value})

    getter.__doc__ = f"Gets the value of {ml_name} or its default."
    setter.__doc__ = f"Sets the value of :py:attr:`{ml_name}`."
    return getter, setter


for _ml, _name in DECLARED.items():
    setattr(_DSGDParams, _ml, Param(Params._dummy(), _ml, P.doc_of(_name), typeConverter=_converter(_name)))
for _ml, (_default, _doc) in ML_OWN.items():
    setattr(_DSGDParams, _ml, Param(Params._dummy(), _ml, _doc, typeConverter=TypeConverters.toString))
for _ml in (*DECLARED, *ML_OWN):
    _get, _set = _accessors(_ml)
    setattr(_DSGDParams, "get" + _ml[0].upper() + _ml[1:], _get)
    setattr(_DSGDParams, "set" + _ml[0].upper() + _ml[1:], _set)


def _check_names(kwargs: dict[str, Any], where: str) -> None:
    unknown = sorted(set(kwargs) - set(DECLARED) - set(ML_OWN))
    if unknown:
        raise TypeError(f"{where}: unknown parameter(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted([*DECLARED, *ML_OWN]))}")


class DSGD(Estimator, _DSGDParams, DefaultParamsWritable, DefaultParamsReadable):
    """Stratified DSGD matrix factorisation as a ``pyspark.ml`` estimator (see the module docstring).

    Keyword arguments are the Params (MLlib camelCase of the ``[model]`` keys plus ``userCol``,
    ``itemCol``, ``ratingCol``, ``timeCol``, ``coldStartStrategy``, ``predictionCol``, ``rankCol``).

    Examples
    --------
    >>> est = DSGD(kind="explicit", rank=8, reg=0.05, epochs=15, engine="local", coldStartStrategy="drop")
    >>> est.getRank(), est.rank.doc
    (8, 'Number of latent factors. Range 1..1024.')
    >>> model = est.fit(ratings_sdf); model.transform(test_sdf).select("prediction").show(3)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._declared_defaults()
        self.setParams(**kwargs)

    def setParams(self, **kwargs: Any) -> DSGD:  # noqa: N802 - MLlib's name
        """Sets Params by keyword (unknown names raise ``TypeError`` listing the allowed ones)."""
        _check_names(kwargs, "DSGD")
        return self._set(**kwargs)

    def plain(self) -> PlainDSGD:
        """The plain :class:`dsgd.api.DSGD` with these parameters (values checked once more there)."""
        return PlainDSGD(**self.plain_params())

    def _fit(self, dataset: DataFrame) -> DSGDModel:
        return self._copyValues(DSGDModel(self.plain().fit(dataset)))


class DSGDModel(Model, _DSGDParams, MLWritable, MLReadable):
    """A fitted :class:`DSGD`: ``transform`` scores rows; :attr:`model` is the plain model.

    Parameters
    ----------
    model : dsgd.api.DSGDModel, optional
        The plain model (``None`` only while being loaded).
    """

    def __init__(self, model: PlainModel | None = None) -> None:
        super().__init__()
        self._declared_defaults()
        self.model = model

    def _plain_for_transform(self) -> PlainModel:
        """The plain model reading this stage's current columns (the Params may have changed after fit)."""
        m = copy.copy(self.model)
        m.params = {**m.params, "user_col": self.getUserCol(), "item_col": self.getItemCol(),
                    "cold_start_strategy": self.getColdStartStrategy()}
        return m

    def _transform(self, dataset: DataFrame) -> DataFrame:
        m = self._plain_for_transform()
        out = m.transform(dataset)
        if self.getRankCol():
            out = rank_column(m, out, self.getRankCol())
        if self.getPredictionCol() != "prediction":
            out = out.withColumnRenamed("prediction", self.getPredictionCol())
        return out

    def write(self) -> ModelWriter:
        """An ``MLWriter``: metadata as ``DefaultParamsWriter`` writes it, factors and seen pairs as Parquet."""
        return ModelWriter(self)

    @classmethod
    def read(cls) -> ModelReader:
        return ModelReader(cls)

    def __repr__(self) -> str:
        return f"DSGDModel(uid={self.uid!r}, model={self.model!r})"


class RankingEvaluator(Evaluator, DefaultParamsWritable, DefaultParamsReadable):
    """Mean ranking quality of a :class:`DSGDModel` transform with ``rankCol`` set (larger is better).

    Each row is one relevant (user, item) event, ranked among all items for its user (the project's
    evaluation protocol, docs/evaluation.md); a row without a rank (unknown user or item) counts as a
    miss. ``metricName``: ``dcgAtK`` (mean of ``1/log2(rank+1)`` if ``rank <= k``, else 0; with one
    relevant item per row it equals NDCG@K), ``hitRateAtK`` (share of rows with ``rank <= k``) or
    ``meanReciprocalRank``.

    Examples
    --------
    >>> ev = RankingEvaluator(k=10)
    >>> ev.evaluate(model.setRankCol("rank").transform(test_sdf))
    0.21...
    """

    METRICS = ("dcgAtK", "hitRateAtK", "meanReciprocalRank")
    metricName = Param(Params._dummy(), "metricName", "Metric: dcgAtK, hitRateAtK or meanReciprocalRank.",
                       typeConverter=TypeConverters.toString)
    k = Param(Params._dummy(), "k", "Cut-off K of dcgAtK and hitRateAtK (>= 1).", typeConverter=TypeConverters.toInt)
    rankCol = Param(Params._dummy(), "rankCol", "Input column of the 1-based ranks.",
                    typeConverter=TypeConverters.toString)

    def __init__(self, *, metricName: str = "dcgAtK", k: int = 100, rankCol: str = "rank") -> None:  # noqa: N803
        super().__init__()
        if metricName not in self.METRICS:
            raise ValueError(f"RankingEvaluator: metricName={metricName!r} is not supported; allowed values: "
                             f"{', '.join(self.METRICS)}")
        if k < 1:
            raise ValueError(f"RankingEvaluator: k must be >= 1, got {k}")
        self._setDefault(metricName="dcgAtK", k=100, rankCol="rank")
        self._set(metricName=metricName, k=k, rankCol=rankCol)

    def _evaluate(self, dataset: DataFrame) -> float:
        r, k, name = F.col(self.getOrDefault("rankCol")), self.getOrDefault("k"), self.getOrDefault("metricName")
        ok = r.isNotNull() & (r >= 1)
        if name == "dcgAtK":
            value = F.when(ok & (r <= k), 1.0 / F.log2(r + 1.0))
        elif name == "hitRateAtK":
            value = F.when(ok & (r <= k), F.lit(1.0))
        else:
            value = F.when(ok, 1.0 / r)
        return float(dataset.select(F.avg(F.coalesce(value, F.lit(0.0)))).first()[0] or 0.0)

    def isLargerBetter(self) -> bool:  # noqa: N802 - MLlib's name
        return True
