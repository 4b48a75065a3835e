"""The harness's model names, serving modes and hyper-parameters (:class:`EvalParams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dsgd.core.foldin import FoldInParams
from dsgd.core.params import KernelParams

SGD_KINDS: tuple[str, ...] = ("online", "batch", "batch+online:warm-start", "batch+online:replace")
PRODUCT_KINDS: tuple[str, ...] = ("als", "als+online:replace", "als+online:score-blend", "retrain+online:warm-start")
MODEL_KINDS: tuple[str, ...] = ("popularity", *SGD_KINDS, *PRODUCT_KINDS)
_ALIASES = {"batch+online": ("batch+online:warm-start", "batch+online:replace"),
            "batch+online:warm": ("batch+online:warm-start",),
            "als+online": ("als+online:replace", "als+online:score-blend"),
            "retrain": PRODUCT_KINDS, "sgd": ("popularity", *SGD_KINDS), "all": MODEL_KINDS}
SERVING_MODES: tuple[str, ...] = ("plain", "fold-in")
NEW_USER_STARTS: tuple[str, ...] = ("zeros", "mean", "popularity")
FOLDIN_SUFFIX = "/fold-in"
POLICY_OF = {"als+online:replace": "replace", "als+online:score-blend": "score-blend",
             "retrain+online:warm-start": "warm-start"}


def expand_models(spec: str | list[str]) -> list[str]:
    """Model names from ``"popularity,online,batch,batch+online,retrain"``; aliases: ``batch+online``
    (both SGD variants), ``als+online`` (replace, score-blend), ``retrain`` (the four product models),
    ``sgd``, ``all``."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for n in filter(None, names):
        for m in _ALIASES.get(n, (n,)):
            if m not in MODEL_KINDS:
                raise ValueError(f"unknown model {n!r}; supported values: {', '.join(MODEL_KINDS)} and the "
                                 f"aliases {', '.join(_ALIASES)}")
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError("no model given")
    return out


def expand_serving(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"plain,fold-in"`` -> ``["plain", "fold-in"]`` (validated)."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = [n for n in dict.fromkeys(filter(None, names))]
    bad = [n for n in out if n not in SERVING_MODES]
    if bad or not out:
        raise ValueError(f"serving modes {bad or out!r}: supported values: {', '.join(SERVING_MODES)}")
    return out


@dataclass(frozen=True)
class EvalParams:
    """Hyper-parameters of the factor models (defaults: GUIDE.md section 4).

    Parameters
    ----------
    rank, init_scale : int, float
        Factor rank; initial components uniform in ``[-init_scale, init_scale]``.
    use_bias : bool
        Learn user and item biases (``model.use_bias``); the item bias is part of every item's score.
    lr, negatives, reg, epochs : float, int, float, int
        Online step: learning rate, uniform negatives per positive (drawn from the known items of the
        DSGD item block), L2 regularisation, epochs per micro-batch.
    batch_lr, batch_epochs : float, int
        Weekly SGD batch retrain (``batch``, ``batch+online:*``): epochs over the whole history.
    batch_order : str
        Order of the history in a batch epoch. Supported values: ``"time"`` (stream order) and
        ``"shuffle"`` (a seeded permutation per retrain).
    d : int
        DSGD blocks per side (d strata per epoch).
    seed, k : int
        Seed of initial vectors and negatives; the DCG cut-off.
    foldin_method, foldin_lr, foldin_epochs, foldin_negatives, foldin_reg, foldin_prior, foldin_alpha, foldin_max_events
        The fold-in rule of the SGD models' user vectors (:class:`dsgd.core.foldin.FoldInParams`):
        ``"sgd"`` (the online step, user side; ``foldin_lr``/``foldin_negatives`` None take
        ``lr``/``negatives``) or ``"ls"`` (closed form, prior ``foldin_prior`` towards the model's
        vector, confidence ``1 + foldin_alpha``). Default ``ls`` with prior 0.1 (measured on the four
        shared streams: ``bench/RESULTS.md``, "Fold-in").
    foldin_new_user, foldin_new_user_min : str, int
        A user the model has not trained on is folded in from ``"zeros"`` (default) or ``"mean"`` (the
        mean known user vector) once they have ``foldin_new_user_min`` events to fold in (default 3;
        fewer: the popularity fallback); ``"popularity"``: never (popularity until trained on).
    """

    rank: int = 10
    init_scale: float = 0.01
    use_bias: bool = False
    lr: float = 0.2
    negatives: int = 19
    reg: float = 0.0
    epochs: int = 1
    batch_lr: float = 0.05
    batch_epochs: int = 10
    batch_order: str = "time"
    d: int = 2
    seed: int = 0
    k: int = 100
    foldin_method: str = "ls"
    foldin_lr: float | None = None
    foldin_epochs: int = 1
    foldin_negatives: int | None = None
    foldin_reg: float = 0.0
    foldin_prior: float = 0.1
    foldin_alpha: float = 1.0
    foldin_max_events: int = 0
    foldin_new_user: str = "zeros"
    foldin_new_user_min: int = 3

    def __post_init__(self) -> None:
        if self.rank < 1 or self.d < 1 or self.epochs < 0 or self.batch_epochs < 0 or self.k < 1:
            raise ValueError(f"need rank >= 1, d >= 1, epochs >= 0, batch_epochs >= 0, k >= 1: {self}")
        if self.batch_order not in ("time", "shuffle"):
            raise ValueError(f"batch_order must be 'time' or 'shuffle', got {self.batch_order!r}")
        self.foldin()  # validates the fold-in settings
        if self.foldin_new_user not in NEW_USER_STARTS:
            raise ValueError(f"foldin_new_user must be one of {NEW_USER_STARTS}, got {self.foldin_new_user!r}")

    def kernel(self, lr: float) -> KernelParams:
        return KernelParams(lr=lr, reg=self.reg, implicit=True, use_bias=self.use_bias, negatives=self.negatives)

    def foldin(self) -> FoldInParams:
        """The fold-in rule of the SGD models (the online model's own update unless overridden)."""
        return FoldInParams(method=self.foldin_method, implicit=True,
                            lr=self.lr if self.foldin_lr is None else self.foldin_lr, epochs=self.foldin_epochs,
                            negatives=self.negatives if self.foldin_negatives is None else self.foldin_negatives,
                            reg=self.foldin_reg if self.foldin_method == "ls" else self.reg,
                            prior=self.foldin_prior if self.foldin_method == "ls" else 0.0, alpha=self.foldin_alpha,
                            max_events=self.foldin_max_events, seed=self.seed, use_bias=self.use_bias)

    def replace(self, **kw: Any) -> EvalParams:
        return dataclasses.replace(self, **kw)
