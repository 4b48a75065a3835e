"""The batch estimator API: ``DSGD(...).fit(events) -> DSGDModel`` (pandas or Spark input)."""

from __future__ import annotations

from dsgd.api.estimator import DSGD
from dsgd.api.model import DSGDModel

__all__ = ["DSGD", "DSGDModel"]
