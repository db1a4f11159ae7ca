"""``POST /specialize``: the front of a predictor-only search, in the response."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from nas.errors import ConfigError, NASError
from nas.serve._schemas import SpecializeOut, SpecializeRequest

__all__ = ["add_specialize_route"]

#: evaluations one request may ask for (population x generations): about 3 s here
MAX_EVALUATIONS = 200_000


def add_specialize_route(api: FastAPI, svc: Any) -> None:
    """Add ``POST /specialize`` to ``api``, bound to ``svc``."""
    from nas.serve._jobs import RequestError, _check_devices, _checked_proxy, _one_line

    @api.post("/specialize", response_model=SpecializeOut, tags=["search"])
    def specialize_route(req: SpecializeRequest) -> dict[str, Any]:
        """Specialize a space for devices and budgets at predictor speed, synchronously.

        Every objective and constraint must be a predictor (an accuracy predictor such as
        `ofa-imagenet`, latency on devices with a fitted or shipped predictor, MACs,
        params): the search runs in this request (about a second), nothing is stored. A
        search that needs the supernet goes through `POST /searches`.
        """
        from nas.search import SearchConfig, choose_engine, specialize

        pop = req.population or 100
        bounds = len(req.constraints) + sum(len(v) for v in req.budgets.values())
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
        try:
            res = specialize(
                cfg.space, objectives=cfg.objectives, constraints=cfg.constraints,
                budgets=req.budgets, proxy=proxy, seed=req.seed, population=req.population,
                generations=req.generations, db=svc.settings.db,
                latency_kind=req.latency_kind, interpolate=req.interpolate,
                refine=req.refine)
        except NASError as exc:
            raise RequestError(("body",), _one_line(exc)) from None
        return res.to_json()
