"""Models compared by the prequential harness (:mod:`dsgd.evaluation.harness`).

Every model scores users against the items known so far (``score``; with fold-in ``score_foldin``),
learns from one micro-batch (``update``) and may retrain at a period boundary (``retrain``).

Two families of factor models:

- SGD stand-ins (``online``, ``batch``, ``batch+online:*``): every micro-batch and every weekly
  retrain is the streaming trainer's DSGD step (:func:`dsgd_step`, pinned equal to
  :func:`dsgd.engines.local.train_epochs` by a test) on dense arrays indexed by stream position;
- the product's retrain (``als``, ``als+online:replace``, ``als+online:score-blend``,
  ``retrain+online:warm-start``): Spark MLlib ALS through :func:`dsgd.engines.als.train_als` (the code
  ``dsgd retrain`` runs, same parameters, id mapping and ALS settings) and the blend policies of
  :mod:`batch.blend` / :mod:`batch.serving` (``replace``: the snapshot replaces the live rows;
  ``warm-start``: ``retrain.warm_start_epochs`` DSGD epochs over the history from the online factors,
  no ALS; ``score-blend``: :func:`dsgd.core.blend.blend_scores` of the frozen snapshot and the online model).
  The retrain runs at the period boundary on the events before it (cut-off ``as_of`` = boundary - 1 ms),
  so no event arrives between the cut-off and the swap (the product replays those).

Items are indexed densely in order of first appearance in the stream, so "the items known before
batch b" are the indices ``0 .. n_known-1``. Users unknown to a factor model (cold users) are scored by
the live popularity counts (the serving fallback); items known to the stream but not (yet) to a model
score ``-inf``.

Fold-in (:mod:`dsgd.core.foldin`, the function ``dsgd serve`` uses): the user's events the model has not
trained on, before the scored event, are folded in with the item factors fixed: for models updated per
micro-batch, the user's earlier events of the current batch; for frozen models (``batch``, ``als``), the
user's events since the retrain's cut-off. The ALS snapshot side always folds in with ALS's own user
solve over the user's whole history (recency-weighted like the fit), which reproduces the snapshot's
user vector for a known user and gives a new user a vector of their own.
"""

from __future__ import annotations

from typing import Any

from dsgd.evaluation.dense import DenseModel, DenseSide, dsgd_step
from dsgd.evaluation.fit_cache import FitCache
from dsgd.evaluation.params import (
    FOLDIN_SUFFIX,
    MODEL_KINDS,
    NEW_USER_STARTS,
    POLICY_OF,
    PRODUCT_KINDS,
    SERVING_MODES,
    SGD_KINDS,
    EvalParams,
    expand_models,
    expand_serving,
)
from dsgd.evaluation.product import ProductModel, RetrainSetup, fit_als, product_config, retrain_setup
from dsgd.evaluation.serving import AlsFoldIn, FactorSet
from dsgd.evaluation.sgd_models import FactorModel
from dsgd.evaluation.stream import Popularity, Stream

__all__ = ["FOLDIN_SUFFIX", "MODEL_KINDS", "NEW_USER_STARTS", "POLICY_OF", "PRODUCT_KINDS", "SERVING_MODES",
           "SGD_KINDS", "AlsFoldIn", "DenseModel", "DenseSide", "EvalParams", "FactorModel", "FactorSet", "FitCache",
           "Popularity", "ProductModel", "RetrainSetup", "Stream", "build_model", "dsgd_step", "expand_models",
           "expand_serving", "fit_als", "product_config", "retrain_setup"]


def build_model(name: str, params: EvalParams, stream: Stream, popularity: Popularity, *,
                cache: FitCache | None = None, setup: RetrainSetup | None = None) -> Any:
    """The model ``name`` with its popularity fallback ``popularity`` (which is the model for "popularity")."""
    if name == "popularity":
        return popularity
    if name in SGD_KINDS:
        return FactorModel(name, params, popularity, stream, cache)
    if setup is None:
        setup = retrain_setup(None, params)
    return ProductModel(name, params, popularity, stream, setup)
