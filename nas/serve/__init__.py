"""The HTTP service: latency predictions, searches, exports and reports on Ray Serve.

Example:
    >>> from nas.serve import ServiceSettings, start
    >>> svc = start(ServiceSettings(port=8000, db="latency_db/latency.sqlite"))
    >>> svc.url            # POST {svc.url}/latency/predict, docs at {svc.url}/docs
    'http://127.0.0.1:8000'
    >>> svc.stop()

Modules are imported on first use of a name (Ray Serve and FastAPI are slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.serve._server import RunningService, check_port_free, ray_env, start
    from nas.serve._settings import INGRESS_MODES, ServiceSettings, is_loopback, resolve_token

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "nas.serve._server": ["RunningService", "check_port_free", "ray_env", "start"],
    "nas.serve._settings": ["INGRESS_MODES", "ServiceSettings", "is_loopback", "resolve_token"],
})
