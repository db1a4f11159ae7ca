"""The Ray Serve deployment and its FastAPI routes.

One deployment, :class:`NASService`, is the ingress: it holds the latency predictors (loaded
once per replica, per (device, space, kind)), merges concurrent predict requests into one
vectorised ``predict`` call (:class:`~nas.serve._batch.Batcher`), and runs the searches and
exports. A well-formed ``POST /latency/predict`` takes a shorter way through the replica than
FastAPI's (:class:`~nas.serve._lane.PredictLane`), to the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from ray import serve

from nas._ray import LOOPBACK
from nas.errors import ArchitectureError, ConfigError, NASError, UnknownNameError
from nas.serve._batch import Batcher, Job, PredictorKey
from nas.serve._guard import Guard
from nas.serve._limits import SEARCH_CAPS, Slots
from nas.serve._schemas import (
    BUSY,
    ERRORS,
    DeviceOut,
    HealthOut,
    PredictRequest,
    PredictResponse,
    SpaceOut,
)
from nas.serve._settings import ServiceSettings

if TYPE_CHECKING:
    from nas.latency import LatencyPredictor
    from nas.space import FamilySpace

__all__ = [
    "NASService",
    "Replica",
    "build_api",
    "check_device_runs",
    "field_error",
    "json_safe",
    "latency_kinds",
    "priced_space",
]

#: the field a space's message about an architecture starts with: ``r must be ...``,
#: ``ks[3] must be ...`` (its key, and the index in its list)
_LEADING_FIELD = re.compile(r"([A-Za-z_]\w*)(?:\[(\d+)\])? ")


def field_error(loc: Sequence[str | int], msg: str, status: int = 422) -> HTTPException:
    """An error in FastAPI's own validation format, naming the field at ``loc``."""
    return HTTPException(status, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}])


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON can hold it: a non-finite float as its text (``"nan"``,
    ``"inf"``), bytes decoded, anything else unknown as ``str``; nesting cut at 32 levels.

    A request's own input is echoed in its 422; JSON has no NaN, so without this a body with
    ``NaN`` in it would end in a 500 while its error was being written.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth >= 32:
        return "..."
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body (``loc``, ``msg``, ``type``, ``input``), always valid JSON."""
    detail = []
    for err in exc.errors():
        item = {"loc": [x if isinstance(x, int) else str(x) for x in err.get("loc", ())],
                "msg": str(err.get("msg", "")).removeprefix("Value error, "),
                "type": str(err.get("type", ""))}
        if "input" in err:
            item["input"] = json_safe(err["input"])
        detail.append(item)
    return JSONResponse({"detail": detail}, status_code=422)


def _openapi(api: FastAPI, token: bool) -> dict[str, Any]:
    """The OpenAPI schema, saying (when the service has a token) that every route but
    ``/health`` needs ``Authorization: Bearer <token>``."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version,
                             description=api.description, routes=api.routes)
        for operations in schema["paths"].values():
            for op in operations.values():
                for status, response in op.get("responses", {}).items():
                    content = response.get("content", {})
                    # errors are JSON whatever the route returns on success (FastAPI
                    # documents them in the route's media type, e.g. the report's HTML)
                    if status[:1] in "45" and "application/json" not in content:
                        response["content"] = {"application/json": next(
                            iter(content.values()), {})}
        _service_caps(schema)
        if token:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            for method in schema["paths"].get("/health", {}).values():
                method["security"] = []
        api.openapi_schema = schema
    return api.openapi_schema


def _service_caps(schema: dict[str, Any]) -> None:
    """Write the service's own caps of a search (:data:`~nas.serve._limits.SEARCH_CAPS`,
    below the search configs' bounds) into the schema's search config models."""
    for model in schema.get("components", {}).get("schemas", {}).values():
        props = model.get("properties", {})
        if "n_trials" not in props:
            continue
        for key, cap in SEARCH_CAPS.items():
            prop = props.get(key)
            if prop is None:
                continue
            for part in prop.get("anyOf", [prop]):
                if part.get("type") == "integer":
                    part["maximum"] = min(cap, part.get("maximum", cap))
            prop["description"] = (prop.get("description", "") +
                                   f" (at most {cap} in this service)").strip()


class _Predictors:
    """Predictors loaded on first use and kept for the replica's life, one load at a time
    per key."""

    def __init__(self, db: str | None) -> None:
        self.db = db
        self.loaded: dict[PredictorKey, LatencyPredictor] = {}
        self._locks: dict[PredictorKey, asyncio.Lock] = {}

    async def get(self, key: PredictorKey) -> LatencyPredictor:
        pred = self.loaded.get(key)
        if pred is not None:
            return pred
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            pred = self.loaded.get(key)
            if pred is None:
                pred = await asyncio.to_thread(self._load, key)
                self.loaded[key] = pred
        return pred

    def _load(self, key: PredictorKey) -> LatencyPredictor:
        from nas.latency import load_predictor

        device, space, kind = key
        return load_predictor(device, space, kind, db=self.db)


class Replica:
    """The service's one replica: predictors, batching, searches, exports (deployed as
    :data:`NASService`; built directly, its ASGI app runs without Ray Serve)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.predictors = _Predictors(settings.db)
        self.batcher = Batcher(self.predictors.loaded.__getitem__,
                               max_batch_size=settings.max_batch_size,
                               wait_s=settings.batch_wait_timeout_s)
        self.jobs: Any = None  # the searches and exports, created on first use
        self.slots = {what: Slots(what, limit) for what, limit in (
            ("specialize", settings.max_specialize), ("predict", settings.max_predicts),
            ("export", settings.max_exports), ("report", settings.max_reports))}
        _bind_internal_grpc(LOOPBACK)

    def __serve_build_asgi_app__(self) -> Any:
        from nas.serve._lane import PredictLane

        api = build_api(self)
        return Guard(PredictLane(api, self), token=self.settings.token,
                     max_body_bytes=self.settings.max_body_bytes)

    # ------------------------------------------------------------------ predictions
    async def predict(self, key: PredictorKey, archs: list[Any]) -> np.ndarray:
        """The predictions (ms) of the predictor of ``key`` for ``archs``, priced in one
        call with the other requests of their batch.

        Raises:
            NASError: no predictor for ``key`` (UnknownNameError: an unknown device).
        """
        await self.predictors.get(key)
        return await self.batcher.submit(Job(key, archs))

    def jobs_or_create(self) -> Any:
        if self.jobs is None:
            from nas.serve._jobs import Jobs

            self.jobs = Jobs(self.settings)
        return self.jobs


def _bind_internal_grpc(host: str) -> None:
    """Make this replica's gRPC servers listen on ``host`` (Ray Serve binds them to every
    interface, ``[::]``): its inter-deployment server and, with direct ingress, its gRPC one.

    Called in the replica's process before Serve starts them (Serve builds the user's class,
    then starts its servers). The hooks are Ray Serve's private names; absent in another Ray
    version, nothing changes (``tests/serve/test_bounded.py`` reads the replica's sockets).
    """
    with contextlib.suppress(Exception):
        from ray.serve._private import default_impl, replica

        def local(address: str) -> str:
            return f"{host}:{address[5:]}" if address.startswith("[::]:") else address

        add_port = replica.add_port_to_grpc_server
        if not getattr(add_port, "_nas_host", None):
            def add_port_here(server: Any, address: str) -> Any:
                return add_port(server, local(address))

            add_port_here._nas_host = host  # type: ignore[attr-defined]
            replica.add_port_to_grpc_server = add_port_here
        add_address = default_impl.add_grpc_address
        if not getattr(add_address, "_nas_host", None):
            def add_address_here(server: Any, address: str) -> Any:
                return add_address(server, local(address))

            add_address_here._nas_host = host  # type: ignore[attr-defined]
            default_impl.add_grpc_address = add_address_here  # type: ignore[assignment]


#: the service's Ray Serve deployment: :class:`Replica`, the ingress
NASService = serve.deployment(
    name="NASService",
    num_replicas=1,
    max_ongoing_requests=512,
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
    health_check_period_s=10,
)(serve.ingress()(Replica))


# ---------------------------------------------------------------------- routes
def _parse_archs(space: FamilySpace, req: PredictRequest) -> list[Any]:
    """Each architecture of the request parsed by its space (a JSON object in the family's
    format); a bad one is a 422 with the space's own message, at ``archs[i]`` and, when the
    message starts with one of the architecture's keys, at that field."""
    archs = []
    for i, a in enumerate(req.archs):
        try:
            archs.append(space.parse(a))
        except ArchitectureError as exc:
            msg = str(exc)
            loc: tuple[str | int, ...] = ("body", "archs", i)
            field = _LEADING_FIELD.match(msg)
            if field and field.group(1) in a:
                loc = (*loc, field.group(1))
                if field.group(2) is not None:
                    loc = (*loc, int(field.group(2)))
            raise field_error(loc, msg) from None
    return archs


def latency_kinds(space: FamilySpace) -> list[str]:
    """The latency predictor kinds that price ``space`` (each kind's ``tags`` name the space
    families, or spaces, it prices)."""
    from nas._plugin import applies_to
    from nas.latency import PREDICTORS

    return [name for name, cls in PREDICTORS.items()
            if applies_to(cls, space.family, space.name)]


def priced_space(name: str, loc: Sequence[str | int], route: str) -> FamilySpace:
    """The space ``name``, if a latency predictor kind prices it; a 422 at ``loc`` saying
    which spaces ``route`` takes otherwise."""
    return _priced_space(name, loc, route)[0]


def _priced_space(name: str, loc: Sequence[str | int],
                  route: str) -> tuple[FamilySpace, list[str]]:
    """:func:`priced_space` and the kinds that price it."""
    from nas.space import get_family_space, list_spaces

    try:
        sp = get_family_space(name)
    except UnknownNameError as exc:
        raise field_error(loc, str(exc)) from None
    kinds = latency_kinds(sp)
    if not kinds:
        ok = [n for n in list_spaces() if latency_kinds(get_family_space(n))]
        raise field_error(loc, f"space {name!r} is of the {sp.family!r} family, which no "
                          f"latency predictor kind prices yet; {route} takes the spaces "
                          f"{', '.join(ok)}")
    return sp, kinds


def check_device_runs(space: FamilySpace, device: str, loc: Sequence[str | int]) -> None:
    """A 422 at ``loc`` when ``device`` (a registered profile) times a workload ``space``
    cannot run (a language model's decode on an image space, or the reverse); an unknown
    device is left to the route's own answer."""
    from nas.serve._devices import DEVICE_CACHE

    try:
        profile = DEVICE_CACHE.known(device)
        if profile is not None:
            space.check_workload(profile.workload, device)
    except ConfigError as exc:
        raise field_error(loc, str(exc)) from None


def _device_info(name: str, db: Any) -> dict[str, Any]:
    from nas.devices import get_device

    profile = get_device(name)
    preds = []
    for rec in db.list_predictors(device=name) if db is not None else []:
        m = rec.metrics
        split = "test" if m.get("test") else "train"
        scores = m.get(split) or {}
        preds.append({"space": rec.space, "kind": rec.kind, "split": split,
                      "n_train": m.get("n_train"), "n_test": m.get("n_test"),
                      "metrics": {k: scores[k] for k in ("mape", "rmse_ms", "within_5",
                                                         "within_10", "kendall_tau")
                                  if k in scores},
                      "created_at": rec.created_at.isoformat()})
    return {"name": profile.name, "profile": profile.to_dict(), "predictors": preds}


def _devices(db_url: str | None) -> list[dict[str, Any]]:
    from nas.db import LatencyDB
    from nas.devices import list_devices

    db = LatencyDB(db_url)
    try:
        return [_device_info(name, db) for name in list_devices()]
    finally:
        db.close()


#: what GET /spaces gave for a space before families, lists and counts: the ofa family's
#: spaces have these attributes; another family's space answers null
_OFA_CHOICES = ("resolutions", "kernel_sizes", "expand_ratios", "depths")
_OFA_COUNTS = ("n_stages", "max_depth")


def _ints(value: Any) -> list[int] | None:
    ok = isinstance(value, tuple | list) and all(type(v) is int for v in value)
    return list(value) if ok else None


def _arch_costs(sp: FamilySpace, arch: Any) -> dict[str, Any]:
    return {"arch": arch.to_dict(), "arch_hash": arch.hash, "macs": sp.macs(arch),
            "params": sp.params(arch)}


def _spaces() -> list[dict[str, Any]]:
    from nas.space import get_family_space, list_spaces

    out = []
    for name in list_spaces():
        sp = get_family_space(name)
        info = {"name": sp.name, "family": sp.family, "description": sp.description,
                "architectures": sp.size(), "latency_kinds": latency_kinds(sp),
                "largest": _arch_costs(sp, sp.largest()),
                "smallest": _arch_costs(sp, sp.smallest()),
                "spec": sp.spec.model_dump(mode="json")}
        for key in _OFA_CHOICES:
            info[key] = _ints(getattr(sp, key, None))
        for key in _OFA_COUNTS:
            value = getattr(sp, key, None)
            info[key] = value if type(value) is int else None
        out.append(info)
    return out


async def predict_answer(svc: Replica, req: PredictRequest) -> JSONResponse:
    """The answer of ``POST /latency/predict`` to ``req`` (validated), by the route and by
    the replica's shorter way (:class:`~nas.serve._lane.PredictLane`).

    Raises:
        HTTPException: 422 naming the field (too many architectures, a space no kind
            prices, a device whose workload the space cannot run, a kind that does not price
            the space, an architecture its space refuses), 404 (nothing fitted).
    """
    settings = svc.settings
    if len(req.archs) > settings.max_archs:
        raise field_error(("body", "archs"), f"at most {settings.max_archs} architectures "
                          f"per request, got {len(req.archs)}")
    sp, kinds = _priced_space(req.space, ("body", "space"), "POST /latency/predict")
    check_device_runs(sp, req.device, ("body", "device"))
    if req.kind is not None and req.kind not in kinds:
        raise field_error(("body", "kind"), f"kind {req.kind!r} does not price space "
                          f"{sp.name!r} (the {sp.family!r} family); its kinds: "
                          f"{', '.join(kinds)}")
    archs = _parse_archs(sp, req)
    key = (req.device, sp.name, req.kind)
    try:
        with svc.slots["predict"].hold():
            ms = await svc.predict(key, archs)
    except UnknownNameError as exc:
        raise field_error(("body", "device"), str(exc)) from None
    except NASError as exc:  # nothing fitted for (device, space, kind); NB: the 429
        # RequestError of a full slots["predict"] is a NASError too, and lands here as a 404
        raise HTTPException(404, detail=str(exc)) from None
    pred = svc.predictors.loaded[key]
    return JSONResponse({
        "device": req.device, "space": sp.name, "kind": pred.kind,
        "latency_ms": ms.tolist(), "hashes": [a.hash for a in archs] if req.hashes else None,
    })


def build_api(svc: Replica) -> FastAPI:
    """The FastAPI app of one replica, its routes bound to ``svc``."""
    from nas import __version__

    settings = svc.settings
    api = FastAPI(
        title="nas",
        version=__version__,
        description="Hardware-aware NAS: latency predictions, searches, exports and reports. "
        "Every route but /health needs `Authorization: Bearer <token>` when the service is "
        "not bound to loopback.",
        responses=ERRORS,
    )
    api.openapi = lambda: _openapi(api, settings.token is not None)  # type: ignore[method-assign]

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @api.exception_handler(NASError)
    async def _nas_error(_: Any, exc: NASError) -> JSONResponse:
        # A NASError that a route did not turn into a field error: the request named
        # something the service cannot use.
        status = 404 if isinstance(exc, UnknownNameError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @api.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness; the only route that never needs the token."""
        return {"status": "ok", "version": __version__}

    @api.get("/devices", response_model=list[DeviceOut], tags=["latency"])
    def devices() -> list[dict[str, Any]]:
        """Device profiles, each with the latency predictors stored for it."""
        return _devices(settings.db)

    @api.get("/spaces", response_model=list[SpaceOut], tags=["latency"])
    def spaces() -> list[dict[str, Any]]:
        """The registered search spaces, of every family: each one's family (the format of
        its architectures), size, largest and smallest architectures with their costs, spec,
        and the latency predictor kinds that price it."""
        return _spaces()

    @api.post("/latency/predict", response_model=PredictResponse, tags=["latency"],
              responses=BUSY)
    async def predict(req: PredictRequest) -> JSONResponse:
        """Predicted latency (ms) of each architecture on a device.

        Each architecture is a JSON object in its space's family's format. A space that no
        latency predictor kind prices (GET /spaces: `latency_kinds`) is refused. Concurrent
        requests are merged into one vectorised predictor call.
        """
        return await predict_answer(svc, req)

    from nas.serve._routes_jobs import add_job_routes
    from nas.serve._routes_specialize import add_specialize_route

    add_job_routes(api, svc)
    add_specialize_route(api, svc)
    return api
