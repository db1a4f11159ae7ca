"""Routes of searches, exports and reports."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from nas.search import search_config_type
from nas.serve._jobs import counts
from nas.serve._limits import retry_headers
from nas.serve._schemas import (
    BUSY,
    SEARCH_ERRORS,
    ExportOut,
    ExportRequest,
    SearchCreated,
    SearchOut,
)

__all__ = ["add_job_routes"]


def _trial_out(t: Any) -> dict[str, Any]:
    return {"number": t.number, "state": t.state, "values": t.values, "arch": t.arch or {},
            "arch_hash": t.arch_hash or "", "feasible": t.feasible,
            "latency_ms": t.latency_ms, "measured_ms": t.measured_ms}


def _search_out(job: Any, res: Any) -> dict[str, Any]:
    cfg = job.config
    objectives = [{"name": o.name, "direction": o.direction, "label": o.label}
                  for o in cfg.objective_list]
    done, failed = counts(res)
    return {
        "id": job.id, "study": cfg.study_name, "status": job.status, "error": job.error,
        "n_trials": cfg.n_trials, "trials_done": done, "trials_failed": failed,
        "objectives": objectives,
        "front": [_trial_out(t) for t in res.front] if res is not None else [],
    }


def _export_out(rec: Any) -> dict[str, Any]:
    import json

    manifest = json.loads((rec.folder / "manifest.json").read_text())
    return {"id": rec.id, "study": rec.study, "trial": rec.trial, "files": rec.files(),
            "manifest": manifest}


def add_job_routes(api: FastAPI, svc: Any) -> None:
    """Add the ``/searches`` and ``/exports`` routes to ``api``, bound to ``svc``."""
    from nas.serve._jobs import RequestError

    @api.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": list(exc.loc), "msg": str(exc),
                                         "type": "value_error"}]}, status_code=exc.status,
                            headers=retry_headers() if exc.status == 429 else None)

    def create_search(config: Any) -> dict[str, Any]:
        """Start a search (a search config, as in `nas search --config`); returns its id.

        The config is one engine's (`engine`: each engine's settings are its own, and a
        setting of another engine is refused); without `engine`, a setting of one engine
        chooses it, else the search does (the predictor engine when every objective and
        constraint is a predictor, Ray otherwise). `storage`, `db` and `address` are the
        service's own; `checkpoint` and `data` must lie in a folder the service allows
        (`--allow-root`), or `data` be `digits`.
        """
        job = svc.jobs_or_create().submit(config.model_dump(exclude_unset=True))
        return {"id": job.id, "study": job.config.study_name, "status": job.status,
                "url": f"/searches/{job.id}"}

    # the body: the union of the registered engines' config models, built now (not at
    # import) so that an engine registered before the app is made is in it and its schema
    create_search.__annotations__["config"] = search_config_type()
    api.post("/searches", response_model=SearchCreated, status_code=201, tags=["search"],
             responses=SEARCH_ERRORS)(create_search)

    @api.get("/searches", response_model=list[dict[str, Any]], tags=["search"])
    def list_searches() -> list[dict[str, Any]]:
        """The searches this service runs or ran since it started."""
        jobs = svc.jobs_or_create()
        out = []
        for j in list(jobs.searches.values()):
            done, failed = jobs.counts(j)
            out.append({"id": j.id, "study": j.config.study_name, "status": j.status,
                        "trials_done": done, "trials_failed": failed})
        return out

    @api.get("/searches/{search_id}", response_model=SearchOut, tags=["search"])
    def get_search(search_id: str) -> dict[str, Any]:
        """Status, trials done and the current Pareto front (best feasible with one
        objective)."""
        jobs = svc.jobs_or_create()
        job = jobs.get(search_id)
        return _search_out(job, jobs.results(job))

    @api.delete("/searches/{search_id}", response_model=SearchOut, status_code=202,
                tags=["search"])
    def cancel_search(search_id: str) -> dict[str, Any]:
        """Cancel a search: it finishes the batches in flight and stops (status
        `cancelling`, then `cancelled`); what it stored stays."""
        jobs = svc.jobs_or_create()
        job = jobs.cancel(search_id)
        return _search_out(job, jobs.results(job))

    @api.get("/searches/{search_id}/report", response_class=HTMLResponse, tags=["search"],
             responses=BUSY)
    def search_report(search_id: str) -> HTMLResponse:
        """The search's report: one self-contained HTML page (as `nas report`)."""
        from nas.report import render_report

        jobs = svc.jobs_or_create()
        job = jobs.get(search_id)
        with svc.slots["report"].hold():
            res = jobs.results(job)
            if res is None or not res.trials:
                raise RequestError(("path", "search_id"), f"search {search_id} has no trial "
                                   "yet", status=404)
            return HTMLResponse(render_report(res))

    @api.post("/exports", response_model=ExportOut, status_code=201, tags=["export"],
              responses=BUSY)
    def create_export(req: ExportRequest) -> dict[str, Any]:
        """Export one trial of a study run by this service (ONNX, weights, manifest; verified
        against torch before it is kept). The same trial twice gives the same export."""
        with svc.slots["export"].hold():
            rec = svc.jobs_or_create().export(req.study, req.trial)
            return _export_out(rec)

    @api.get("/exports/{export_id}", response_model=ExportOut, tags=["export"])
    def get_export(export_id: str) -> dict[str, Any]:
        """An export's files and manifest."""
        return _export_out(svc.jobs_or_create().export_record(export_id))

    @api.get("/exports/{export_id}/{file}", tags=["export"],
             responses={200: {"content": {"application/octet-stream": {},
                                          "application/json": {}}}})
    def get_export_file(export_id: str, file: str) -> FileResponse:
        """One file of an export: `model.onnx`, `weights.safetensors` or `manifest.json`."""
        path = svc.jobs_or_create().export_file(export_id, file)
        media = "application/json" if path.suffix == ".json" else "application/octet-stream"
        return FileResponse(path, media_type=media, filename=path.name)
