"""Request and response bodies of the HTTP API (pydantic models: the OpenAPI schema at /docs).

Requests forbid unknown fields, so that a typo is a 422 naming the field rather than a
silently ignored option.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from nas.search import OneOf

__all__ = [
    "ARCH_EXAMPLES",
    "BUSY",
    "ERRORS",
    "ID_PATTERN",
    "MAX_BOUNDS",
    "NAME_PATTERN",
    "SEARCH_ERRORS",
    "ArchCosts",
    "DeviceOut",
    "ErrorOut",
    "ExportOut",
    "ExportRequest",
    "HealthOut",
    "Kind",
    "PredictRequest",
    "PredictResponse",
    "SearchCreated",
    "SearchOut",
    "SpaceOut",
    "SpecializeOut",
    "SpecializeRequest",
    "TrialOut",
]

#: Names of devices, spaces and studies: also file names, so no separators.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: Search and export ids made by the service: 16 lowercase hex digits.
ID_PATTERN = r"^[0-9a-f]{16}$"

_HARD_MAX_ARCHS = 100_000  # the service's own limit (settings.max_archs) is checked after
#: bounds one /specialize request may pick subnets at (its constraints and budget values in
#: all): each is an entry of the answer's ``best``, and with ``refine`` a search of its own
MAX_BOUNDS = 64



class _Known(OneOf):
    """:class:`~nas.search.OneOf` that first asks ``known(value)``, a membership test
    cheaper than listing every name (it runs on every predict request); a name it does not
    know gets OneOf's own check and message."""

    def __init__(self, names: Callable[[], Iterable[str]],
                 known: Callable[[str], bool]) -> None:
        super().__init__(names)
        self.known = known

    def _check(self, value: str) -> str:
        return value if self.known(value) else super()._check(value)


def _predictor_kinds() -> list[str]:
    from nas.latency import PREDICTORS

    return list(PREDICTORS)


def _is_predictor_kind(name: str) -> bool:
    from nas.latency import PREDICTORS

    return name in PREDICTORS


#: A latency predictor kind: one of ``nas.latency.PREDICTORS`` (listed in the OpenAPI schema).
Kind = Annotated[str, _Known(_predictor_kinds, _is_predictor_kind)]


def _devices() -> list[str]:
    # the files as of their folders' last change (nas.devices reads them on every lookup)
    from nas.serve._devices import DEVICE_CACHE

    return DEVICE_CACHE.names()


def _is_device(name: str) -> bool:
    from nas.serve._devices import DEVICE_CACHE

    return name in DEVICE_CACHE


def _spaces() -> list[str]:
    """The registered spaces, of every family (a route refuses a space it cannot serve in one
    line saying which it can: see ``latency_kinds`` of GET /spaces)."""
    from nas.space import list_spaces

    return list_spaces()


def _is_space(name: str) -> bool:
    from nas.space import SPACES

    return name in SPACES


class ErrorOut(BaseModel):
    """An error: a message, or a list of fields (``loc``) with what is wrong (``msg``)."""

    detail: str | list[dict[str, Any]]


def _error(text: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": text}


#: Errors any route may answer (the bearer-token check and the size limit come first).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("a request the service cannot read (e.g. a body that is not JSON text)"),
    401: _error("missing or wrong bearer token (when the service has one)"),
    404: _error("no such route, search, export or file"),
    413: _error("request body above the service's limit"),
}
#: Errors of POST /searches besides those.
SEARCH_ERRORS: dict[int | str, dict[str, Any]] = {
    409: _error("the study name is taken"),
    429: _error("as many searches run as the service allows; retry after the Retry-After "
                "header's seconds"),
}
#: The error of a route that computes, when as many run as the service allows.
BUSY: dict[int | str, dict[str, Any]] = {
    429: _error("as many of these requests run as the service allows; retry after the "
                "Retry-After header's seconds"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Examples of an architecture, one per shipped family (the format is the space's family's).
ARCH_EXAMPLES: list[dict[str, Any]] = [
    {"ks": [3, 5, 3, 3], "e": [2, 4, 4, 2], "d": [2, 1], "r": 24},
    {"n_layer": 2, "n_embd": 32, "n_head": [2, 4], "mlp": [64, 128]},
]

#: An architecture in a request: a JSON object in its space's family's format, checked by the
#: space itself (a bad one is a 422 naming the architecture, with the space's own message).
ArchIn = Annotated[dict[str, Any], Field(
    max_length=64,
    description="an architecture in its space's family's format: the ofa family's "
                "{\"ks\", \"e\", \"d\", \"r\"}, the gpt family's "
                "{\"n_layer\", \"n_embd\", \"n_head\", \"mlp\"} (GET /spaces: each "
                "space's family and its largest architecture)",
    examples=ARCH_EXAMPLES)]


class PredictRequest(_Strict):
    device: Annotated[str, _Known(_devices, _is_device)] = Field(
        pattern=NAME_PATTERN, description="device profile (GET /devices)")
    space: Annotated[str, _Known(_spaces, _is_space)] = Field(
        pattern=NAME_PATTERN, description="search space (GET /spaces)")
    archs: list[ArchIn] = Field(min_length=1, max_length=_HARD_MAX_ARCHS)
    kind: Kind | None = Field(
        default=None,
        description="predictor kind; default: the stored one with the best held-out MAPE",
    )
    hashes: StrictBool = Field(default=False,
                               description="also return each arch's canonical hash")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "device": "cpu-1t", "space": "ofa_mbv3",
            "archs": [{"ks": [3, 3, 5, 7, 3, 3, 5, 3, 7, 7, 3, 7, 3, 7, 5, 5, 3, 3, 5, 5],
                       "e": [3, 3, 4, 3, 6, 4, 3, 4, 6, 4, 6, 6, 6, 4, 4, 6, 6, 6, 6, 3],
                       "d": [2, 2, 2, 3, 3], "r": 224}],
        }]},
    )


class PredictResponse(BaseModel):
    device: str
    space: str
    kind: str = Field(description="the predictor kind that answered")
    latency_ms: list[float] = Field(description="one prediction per arch, in order")
    hashes: list[str] | None = Field(
        default=None, description="each arch's canonical hash, in order (when asked for)")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str


class DeviceOut(BaseModel):
    name: str
    profile: dict[str, Any]
    predictors: list[dict[str, Any]] = Field(
        description="stored predictors: space, kind, held-out metrics, when fitted"
    )


class ArchCosts(BaseModel):
    arch: dict[str, Any] = Field(description="in the space's family's format")
    arch_hash: str
    macs: int = Field(description="multiply-accumulates (per image for the ofa family, per "
                                  "token at the space's context for the gpt family)")
    params: int


class SpaceOut(BaseModel):
    name: str
    family: str = Field(description="the space family: the format of its architectures")
    description: str
    architectures: int
    latency_kinds: list[str] = Field(description=(
        "the latency predictor kinds that price its architectures; none: "
        "POST /latency/predict and POST /specialize refuse the space"))
    largest: ArchCosts
    smallest: ArchCosts
    spec: dict[str, Any] = Field(description="the space's spec (its YAML file, as JSON)")
    resolutions: list[int] | None = Field(default=None, description="ofa family; else null")
    kernel_sizes: list[int] | None = Field(default=None, description="ofa family; else null")
    expand_ratios: list[int] | None = Field(default=None, description="ofa family; else null")
    depths: list[int] | None = Field(default=None, description="ofa family; else null")
    n_stages: int | None = Field(default=None, description="ofa family; else null")
    max_depth: int | None = Field(default=None, description="ofa family; else null")


class TrialOut(BaseModel):
    number: int
    state: str
    values: dict[str, float]
    arch: dict[str, Any]
    arch_hash: str
    feasible: bool
    latency_ms: dict[str, float]
    measured_ms: dict[str, float]


class SearchCreated(BaseModel):
    id: str
    study: str
    status: str
    url: str = Field(description="where to follow it: GET this path")


class SearchOut(BaseModel):
    id: str
    study: str
    status: Literal["pending", "running", "cancelling", "completed", "cancelled", "failed"]
    error: str | None = None
    n_trials: int = Field(description="trials asked for")
    trials_done: int = Field(description="completed trials so far")
    trials_failed: int
    objectives: list[dict[str, str]]
    front: list[TrialOut] = Field(description="the current Pareto front (or best feasible)")


class ExportRequest(_Strict):
    study: str = Field(pattern=NAME_PATTERN)
    trial: StrictInt = Field(ge=0, description="trial number in the study")


class ExportOut(BaseModel):
    id: str
    study: str
    trial: int
    files: list[str] = Field(description="file names, each at GET /exports/{id}/{file}")
    manifest: dict[str, Any]


class SpecializeRequest(_Strict):
    """A search at predictor speed, answered in the response (nothing is stored)."""

    space: Annotated[str, _Known(_spaces, _is_space)] = Field(
        pattern=NAME_PATTERN, description="search space (GET /spaces)")
    proxy: str = Field(default="ofa-imagenet", max_length=500, description=(
        "accuracy predictor: ofa-imagenet, predictor:path=FILE (inside an allowed root), "
        "macs, params; proxies that need the supernet run through POST /searches"))
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"], min_length=1,
                                  max_length=8, description=(
        "accuracy, latency:<device>, macs, params (several: the Pareto front)"))
    constraints: dict[str, float] = Field(default_factory=dict, max_length=16, description=(
        "upper bounds, e.g. {\"latency:note10\": 20}"))
    budgets: dict[str, Annotated[list[float], Field(max_length=MAX_BOUNDS)]] = Field(
        default_factory=dict, max_length=16, description=(
            "more bounds at which to pick the best subnet of the front, e.g. "
            f"{{\"latency:note10\": [15, 20, 30]}}; at most {MAX_BOUNDS} bounds in all, "
            "constraints included"))
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    population: StrictInt | None = Field(default=None, ge=2, le=1000,
                                         description="default 100")
    generations: StrictInt = Field(default=300, ge=1, le=2000)
    interpolate: StrictBool = Field(default=False, description=(
        "also search resolutions between a lookup table's, priced by interpolation"))
    latency_kind: Kind | None = Field(default=None, description="predictor kind per device")
    refine: StrictBool = Field(default=False, description=(
        "search again under each bound, briefly, warm-started from the front: better picks "
        "at the large bounds for about a fifth of the search per bound"))

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "space": "ofa_mbv3", "proxy": "ofa-imagenet",
        "objectives": ["accuracy", "latency:note10"],
        "constraints": {"latency:note10": 40}, "budgets": {"latency:note10": [15, 20, 30]},
    }]})


class SpecializeOut(BaseModel):
    space: str
    objectives: list[str]
    constraints: dict[str, float]
    front: list[dict[str, Any]] = Field(description=(
        "the feasible Pareto front (one subnet for one objective), best first: arch, "
        "arch_hash, accuracy, latency_ms per device, macs, params"))
    best: dict[str, dict[str, Any] | None] = Field(description=(
        "per bound (\"latency:note10<=20\"), the best subnet of the front within it"))
    n_scored: int
    generations: int
    population: int
    seconds: float = Field(description="wall time of the search")
    resolutions: list[int] = Field(description="the resolutions searched")
