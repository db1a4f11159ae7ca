"""The Ray side of a search, kept thin: the evaluator actors (Ray itself is started by
:mod:`nas._ray`, bound to loopback unless a cluster address is given)."""

from __future__ import annotations

from typing import Any

from nas._ray import start_ray, stop_ray
from nas.errors import NASError
from nas.search._config import RaySearchConfig
from nas.search._worker import Evaluator, error_line

__all__ = ["MAX_STARTUP_DEATHS", "EvaluatorPool", "cause", "start_ray", "stop_ray"]

#: stop when this many replacement actors in a row die before finishing any batch
MAX_STARTUP_DEATHS = 3


def cause(exc: BaseException) -> str:
    """The line of a Ray error that says what failed in the actor (not Ray's wrapping)."""
    text = str(exc)
    for line in text.splitlines()[::-1]:
        line = line.strip()
        if line and ("Error" in line.split(":", 1)[0]) and not line.startswith("ray."):
            return line[:500]
    return error_line(exc)


class EvaluatorPool:
    """The evaluator actors: creation, replacement after a death, and their statistics."""

    def __init__(self, cfg: RaySearchConfig, predictors: dict[str, Any]) -> None:
        import ray

        self.cfg = cfg
        self.deaths_in_a_row = 0
        self._cls = ray.remote(Evaluator).options(
            num_cpus=cfg.worker_threads, max_restarts=0, max_task_retries=0,
        )
        self._config = cfg.model_dump()
        self._preds = ray.put(predictors)
        self.actors: list[Any] = [self._new() for _ in range(cfg.workers)]

    def _new(self) -> Any:
        return self._cls.remote(self._config, self._preds, self.cfg.worker_threads)

    def start(self) -> None:
        """Wait until every actor has loaded what it needs; one line if one cannot."""
        import ray

        try:
            ray.get([a.info.remote() for a in self.actors])
        except Exception as exc:
            raise NASError(f"the evaluators could not start: {cause(exc)}") from None

    def evaluate(self, idx: int, archs: list[dict[str, Any]]) -> Any:
        """Send a batch to actor ``idx``; returns the Ray object ref of its results."""
        return self.actors[idx].evaluate.remote(archs)

    def replace(self, idx: int) -> None:
        """Replace the dead actor ``idx``.

        Raises:
            NASError: too many actors died in a row without finishing a batch.
        """
        import ray

        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > MAX_STARTUP_DEATHS * max(1, len(self.actors)):
            raise NASError(f"{self.deaths_in_a_row} evaluator actors died in a row without "
                           "finishing a batch; see the Ray logs (`ray logs`)")
        ray.kill(self.actors[idx], no_restart=True)
        self.actors[idx] = self._new()

    def stats(self) -> list[dict[str, Any]]:
        """Each live actor's pid, host and peak memory (dead ones are left out)."""
        import ray

        out = []
        for a in self.actors:
            try:
                out.append(ray.get(a.info.remote(), timeout=30))
            except Exception:  # Ray raises many types here
                continue
        return out

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # Ray raises many types here
                pass
