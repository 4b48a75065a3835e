"""The HTTP API of ``dsgd serve`` (FastAPI; OpenAPI docs at ``/docs``).

| endpoint | answers |
|---|---|
| ``GET /users/{user}/recommendations?k=&exclude_seen=&include=&exclude=`` | top-k of one user: items, scores, ``source`` (``model``/``popularity``), ``model_version`` |
| ``POST /recommendations`` | ``{"users": [...]}``: many users at once; ``{"user"?: .., "events": [{"item", "rating"?}]}``: one user folded in from their recent events (``source = fold-in``) |
| ``GET /items/{item}/similar?k=`` | the items closest to ``item`` (cosine of the item vectors) |
| ``GET /health`` | liveness (always 200 while the process runs) |
| ``GET /ready`` | 200 with the served version and its age once a model is loaded, else 503 |
| ``GET /metrics`` | Prometheus text format (:mod:`dsgd.serve.metrics`) |

``include``/``exclude`` are repeated query parameters (``?include=i1&include=i2``). Errors are JSON
``{"error": ..., "parameter": ...}`` naming the parameter: 400 (k out of range, unknown item in a filter,
inconsistent body), 401 (missing/wrong bearer token), 404 (unknown item of ``similar``), 413 (body over
``serve.max_body_bytes``), 422 (a value of the wrong type, malformed JSON), 503 (no model yet). User
input never causes a 500. Handlers are plain functions run in a thread pool (``serve.threads``): numpy
releases the GIL, so requests score in parallel on the cores.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema

from dsgd import __version__
from dsgd.core.config import Config
from dsgd.serve.guard import Guard
from dsgd.serve.holder import Holder
from dsgd.serve.metrics import CONTENT_TYPE
from dsgd.serve.service import BadRequest, NotReady, Service

log = logging.getLogger("dsgd.serve")

Id = StrictStr | StrictInt  # ids are taken by their JSON text, like the event contract's
#: A field the event contract checks (dsgd.core.contract.parse_fields), so it accepts any JSON value here.
ContractId = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]})]
ContractNumber = Annotated[Any, WithJsonSchema({"type": "number"})]
ContractTime = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})]
K = Annotated[int | None, Query(description="list length (1..serve.max_k; default serve.default_k)")]
ExcludeSeen = Annotated[bool | None, Query(description="leave out the user's seen items (default serve.exclude_seen)")]
Include = Annotated[list[str] | None, Query(description="only these items may be recommended (repeat the parameter)")]
Exclude = Annotated[list[str] | None, Query(description="these items are never recommended (repeat the parameter)")]


class EventIn(BaseModel):
    """One event of a fold-in request, checked with the event contract (a bad value: 422 naming the field and
    the contract's reason)."""

    model_config = ConfigDict(extra="forbid")
    item: ContractId = Field(None, description="item id (a string, or an integer taken by its text)")
    rating: ContractNumber = Field(None, description="explicit models: the rating (required, within model.rating_min"
                                   "..rating_max); implicit: an optional weight >= 0")
    ts: ContractTime = Field(None, description="event time: epoch ms or RFC 3339 with an offset (checked, optional)")


class RecommendRequest(BaseModel):
    """Either ``users`` (many users at once) or ``events`` (one user folded in from them)."""

    model_config = ConfigDict(extra="forbid")
    users: list[Id] | None = Field(None, description="user ids (at most serve.max_batch_users)")
    user: ContractId = Field(None, description="with events: the user they belong to (optional; the contract's id rules)")
    events: list[EventIn] | None = Field(None, description="the user's recent events, oldest first")
    k: StrictInt | None = Field(None, description="list length (1..serve.max_k)")
    exclude_seen: StrictBool | None = Field(None, description="leave out items the user has events on")
    include: list[Id] | None = Field(None, description="only these items may be recommended")
    exclude: list[Id] | None = Field(None, description="these items are never recommended")


class ItemScore(BaseModel):
    item: str
    score: float


class Recommendation(BaseModel):
    user: str | None
    source: str = Field(description="model, fold-in or popularity")
    model_version: int
    snapshot_id: str | None = None
    items: list[ItemScore]
    events_used: int | None = None
    events_ignored: int | None = Field(None, description="events on items the model does not know")


class Batch(BaseModel):
    model_version: int
    results: list[Recommendation]


class Similar(BaseModel):
    item: str
    model_version: int
    items: list[ItemScore]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")


def _error(parameter: str, message: str, status: int, **extra: Any) -> Response:
    return _json({"error": message, "parameter": parameter, **extra}, status)


def _param_name(loc: tuple) -> str:
    """``("body", "events", 2, "item")`` -> ``events[2].item``; ``("query", "k")`` -> ``k``."""
    parts = [p for p in loc[1:] if p not in ("str", "int")] or ["body"]
    out = str(parts[0])
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        name = _param_name(tuple(first.get("loc", ("body",))))
        if first.get("type") == "json_invalid":
            return _error("body", f"malformed JSON body: {first.get('msg')}", 422)
        return _error(name, f"{name}: {first.get('msg')}", 422,
                      detail=[{"parameter": _param_name(tuple(e.get("loc", ()))), "message": e.get("msg")}
                              for e in errors[:20]])

    @app.exception_handler(BadRequest)
    async def bad(_request, exc: BadRequest) -> Response:
        return _error(exc.parameter, exc.message, exc.status, **({"reason": exc.reason} if exc.reason else {}))

    @app.exception_handler(NotReady)
    async def not_ready(_request, exc: NotReady) -> Response:
        return _json({"error": str(exc), "ready": False}, 503)


def _ids(values: list | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def create_app(cfg: Config, holder: Holder, *, token: str = "") -> FastAPI:
    """The ASGI app on ``holder``'s state; ``token`` (if any) is required by every route but /health,
    /ready and the docs."""
    svc = Service(holder, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = cfg.serve.threads
        yield

    app = FastAPI(title="dsgd serve", version=__version__, lifespan=lifespan,
                  description="Recommendations from the live Delta model of dsgd-stream (no JVM).")
    _install_errors(app)

    @app.get("/users/{user}/recommendations", response_model=Recommendation)
    def user_recommendations(user: str, k: K = None, exclude_seen: ExcludeSeen = None, include: Include = None,
                             exclude: Exclude = None) -> Response:
        return _json(svc.for_users([user], k=k, exclude_seen=exclude_seen, include=include, exclude=exclude)[0])

    @app.post("/recommendations", response_model=Recommendation | Batch)
    def recommendations(body: RecommendRequest) -> Response:
        opts = {"k": body.k, "exclude_seen": body.exclude_seen, "include": _ids(body.include),
                "exclude": _ids(body.exclude)}
        if (body.users is None) == (body.events is None):
            raise BadRequest("users", "give exactly one of users (many users) or events (one user's fold-in)")
        if body.users is not None:
            if body.user is not None:
                raise BadRequest("user", "user goes with events; for many users use users only")
            res = svc.for_users(_ids(body.users) or [], **opts)
            return _json({"model_version": svc.state().version if not res else res[0]["model_version"],
                          "results": res})
        events = [e.model_dump(exclude_unset=True) for e in body.events or []]
        return _json(svc.for_events(body.user, events, **opts))

    @app.get("/items/{item}/similar", response_model=Similar)
    def similar(item: str, k: K = None) -> Response:
        return _json(svc.similar(item, k=k))

    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        return _json(svc.ready())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(holder.metrics.render(), media_type=CONTENT_TYPE)

    return Guard(app, token=token, max_body=cfg.serve.max_body_bytes, metrics=holder.metrics)  # type: ignore[return-value]
