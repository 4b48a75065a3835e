"""Hyper-parameters of one SGD pass over a block (the kernel's contract, independent of app config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NEGATIVE_SAMPLING = ("uniform", "popularity")


@dataclass(frozen=True)
class KernelParams:
    """Parameters read by :func:`dsgd.core.kernel.run_block` and :func:`dsgd.core.reference.run_block_reference`.

    Parameters
    ----------
    lr : float
        Learning rate (step size) of every update.
    reg : float
        L2 regularisation applied to the updated vectors and biases.
    mu : float
        Global mean added to every explicit prediction (ignored when ``implicit``).
    implicit : bool
        Implicit feedback: every event is a positive with target 1, followed by ``negatives`` sampled
        negatives with target 0. Explicit: the target is the event's rating.
    use_bias : bool
        Learn per-user and per-item biases.
    negatives : int
        Negative samples per positive (implicit only).
    negative_sampling : str
        Supported values: ``"uniform"`` (uniform over the negative pool) and ``"popularity"``
        (proportional to the pool's weights).
    """

    lr: float
    reg: float
    mu: float = 0.0
    implicit: bool = False
    use_bias: bool = True
    negatives: int = 0
    negative_sampling: str = "uniform"

    def __post_init__(self) -> None:
        if not self.lr >= 0:
            raise ValueError(f"lr must be >= 0, got {self.lr!r}")
        if not self.reg >= 0:
            raise ValueError(f"reg must be >= 0, got {self.reg!r}")
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives!r}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(
                f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {self.negative_sampling!r}"
            )


def params_from_model_config(m: Any, *, mu: float, lr: float | None = None) -> KernelParams:
    """Kernel parameters of a ``[model]`` config section (:class:`dsgd.core.config.ModelConfig`).

    Explicit models always learn biases and draw no negatives; ``lr`` overrides ``model.lr``.
    """
    explicit = m.kind == "explicit"
    return KernelParams(lr=m.lr if lr is None else lr, reg=m.reg, mu=mu, implicit=not explicit,
                        use_bias=explicit or m.use_bias, negatives=0 if explicit else m.negatives,
                        negative_sampling=m.negative_sampling)
