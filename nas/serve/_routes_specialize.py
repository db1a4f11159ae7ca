"""``POST /specialize``: the front of a predictor-only search, in the response."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from fastapi import FastAPI, Request

from nas.errors import ConfigError, NASError
from nas.serve._schemas import BUSY, MAX_BOUNDS, SpecializeOut, SpecializeRequest

__all__ = ["add_specialize_route"]

#: evaluations one request may ask for (population x generations): about 3 s here
MAX_EVALUATIONS = 200_000
_CHECKS = threading.Lock()
_WARM = threading.Event()  # set once a request has run (the registries are loaded)


async def _until_disconnect(request: Request, stop: threading.Event) -> None:
    """Set ``stop`` when the client goes away (its ``http.disconnect``)."""
    while not stop.is_set():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            stop.set()


def add_specialize_route(api: FastAPI, svc: Any) -> None:
    """Add ``POST /specialize`` to ``api``, bound to ``svc``."""
    from nas.serve._jobs import RequestError, _check_devices, _checked_proxy, _one_line

    @api.post("/specialize", response_model=SpecializeOut, tags=["search"], responses=BUSY)
    async def specialize_route(req: SpecializeRequest, request: Request) -> dict[str, Any]:
        """Specialize a space for devices and budgets at predictor speed, synchronously.

        Every objective and constraint must be a predictor (an accuracy predictor such as
        `ofa-imagenet`, latency on devices with a fitted or shipped predictor, MACs,
        params): the search runs in this request (about a second), nothing is stored. A
        search that needs the supernet goes through `POST /searches`. The service runs a
        few at once (429 with `Retry-After` beyond); one whose client goes away stops.
        """
        stop = threading.Event()
        with svc.slots["specialize"].hold():
            watch = asyncio.create_task(_until_disconnect(request, stop))
            work = asyncio.ensure_future(asyncio.to_thread(run, req, stop))
            try:
                return await asyncio.shield(work)
            finally:  # answered, failed, or cancelled with its client: the work stops, and
                stop.set()  # its slot is free only once it has
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await work
                with contextlib.suppress(BaseException):
                    await watch

    def run(req: SpecializeRequest, stop: threading.Event) -> dict[str, Any]:
        # one request at a time checks, and the first one runs whole under the lock: the
        # plug-in registries' first load is not thread-safe (another thread could see one
        # still empty)
        with _CHECKS:
            cfg, proxy = check(req)
            if not _WARM.is_set():
                out = search(req, cfg, proxy, stop)
                _WARM.set()
                return out
        return search(req, cfg, proxy, stop)

    def search(req: SpecializeRequest, cfg: Any, proxy: str,
               stop: threading.Event) -> dict[str, Any]:
        from nas.search import specialize

        try:
            res = specialize(
                cfg.space, objectives=cfg.objectives, constraints=cfg.constraints,
                budgets=req.budgets, proxy=proxy, seed=req.seed, population=req.population,
                generations=req.generations, db=svc.settings.db,
                latency_kind=req.latency_kind, interpolate=req.interpolate,
                refine=req.refine, stop=stop)
        except NASError as exc:
            raise RequestError(("body",), _one_line(exc)) from None
        return res.to_json()

    def check(req: SpecializeRequest) -> tuple[Any, str]:
        """The request's search config and its checked proxy, or a RequestError."""
        from nas.search import SearchConfig, choose_engine
        from nas.serve._app import priced_space

        priced_space(req.space, ("body", "space"), "POST /specialize")  # or a 422
        pop = req.population or 100
        bounds = len(req.constraints) + sum(len(v) for v in req.budgets.values())
        if bounds > MAX_BOUNDS:
            raise RequestError(("body", "budgets"), f"budgets: {bounds} bounds in all "
                               f"(constraints and budget values) is above this route's "
                               f"{MAX_BOUNDS}")
        passes = 1 + (bounds / 5 if req.refine else 0)  # each refinement: a fifth
        if pop * req.generations * passes > MAX_EVALUATIONS:
            raise RequestError(("body", "generations"), f"population x generations "
                               f"(x refinements) = {pop * req.generations * passes:.0f} is "
                               f"above this route's {MAX_EVALUATIONS}; use POST /searches "
                               "for longer searches")
        proxy = _checked_proxy(req.proxy, svc.settings.roots)
        try:
            cfg = SearchConfig.from_dict(
                {"space": req.space, "proxy": proxy, "objectives": req.objectives,
                 "constraints": req.constraints, "db": svc.settings.db},
                where="specialize")
        except ConfigError as exc:
            msg = str(exc).removeprefix("specialize: ")
            field = msg.split(" ", 1)[0].split(".")[0]
            loc = ("body", field) if field in SpecializeRequest.model_fields else ("body",)
            raise RequestError(loc, msg) from None
        _check_devices(cfg)
        try:
            choose_engine(cfg.for_engine("predictor"))
        except ConfigError as exc:
            msg = _one_line(exc)
            if msg.startswith("engine = 'predictor': "):  # a model is needed: not here
                msg = msg.removeprefix("engine = 'predictor': ").split(";")[0] + \
                    "; POST /searches runs such searches"
            raise RequestError(("body", "proxy"), msg) from None
        return cfg, proxy
