"""What the service computes at once, and how much one request may ask for.

Every route that computes holds a slot of its kind while it runs (:class:`Slots`); when all
are taken the request is answered at once with 429 and ``Retry-After`` instead of queueing
behind the others, so that a burst of heavy requests cannot starve ``/health`` and the light
routes, nor leave work running after its clients gave up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RETRY_AFTER_S", "SEARCH_CAPS", "Slots", "retry_headers"]

#: seconds a client is told to wait after a 429
RETRY_AFTER_S = 1

#: the most a search submitted to the service may ask for, per setting (the search configs'
#: own bounds are wider: these are the service's, shown as ``maximum`` in its OpenAPI schema)
SEARCH_CAPS: dict[str, int] = {"n_trials": 10_000, "population": 1_000, "generations": 2_000,
                               "batch_size": 256}


def retry_headers() -> dict[str, str]:
    """The headers of a 429."""
    return {"Retry-After": str(RETRY_AFTER_S)}


class Slots:
    """At most ``limit`` requests of one kind computing at once; thread-safe (sync routes run
    in threads, async ones on the event loop).

    Example:
        >>> slots = Slots("specialize", 2)
        >>> with slots.hold():
        ...     ...  # the work; a third concurrent ``hold()`` raises a 429 RequestError
    """

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self.busy = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take a slot for the block, or raise a 429 :class:`~nas.serve._jobs.RequestError`
        (one line naming the limit) when none is free."""
        from nas.serve._jobs import RequestError

        with self._lock:
            if self.busy >= self.limit:
                raise RequestError(("body",), f"{self.limit} {self.what} requests are running, "
                                   f"the most this service runs at once; retry in "
                                   f"{RETRY_AFTER_S} s", status=429)
            self.busy += 1
        try:
            yield
        finally:
            with self._lock:
                self.busy -= 1
