"""What every search sampler must do beyond the shared plug-in contract, as check functions
(as Optuna's shared sampler tests, and scikit-learn's ``parametrize_with_checks``).

:data:`SAMPLER_CHECKS` is the registry's own checks (``Registry(checks=...)`` of
:data:`~nas.search.SAMPLERS`): :mod:`nas.testing` runs them after the contract every plug-in
meets, on a sampler's class, in this package's tests and in any plug-in package's. Each runs
the sampler on an in-memory Optuna study over the search's own parameters of the ``tiny``
space (no Ray, no supernet), with synthetic objectives computed from the architecture the
parameters give, and raises ``AssertionError`` naming what is broken.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nas.errors import ConfigError
from nas.search._config import RaySearchConfig
from nas.search._params import arch_from_params, distributions
from nas.search._samplers import SearchSampler
from nas.space import FamilySpace, get_space

__all__ = ["SAMPLER_CHECKS"]

#: a sampler (the class registered)
SamplerClass = type[SearchSampler]

SPACE = "tiny"
#: past the random start-up of TPE (10) and GP (10), and 3 generations of 4
N_TRIALS = 12


def _expect(ok: Any, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's trial log and its experimental-feature warnings off, as they were after."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _config(cls: SamplerClass, n_objectives: int, seed: int = 7) -> RaySearchConfig:
    objectives = ["accuracy", "macs"][:n_objectives]
    try:
        return RaySearchConfig(space=SPACE, objectives=objectives, sampler=cls.name,
                               population=4, seed=seed)
    except ConfigError as exc:
        raise AssertionError(f"a search config with sampler {cls.name!r} and objectives "
                             f"{objectives} is refused: {exc}") from None


def _values(space: FamilySpace, arch: Any, n: int) -> list[float]:
    """Objectives that conflict: the sum of the architecture's ordinal encoding (bigger
    choices everywhere, maximised as accuracy is) against its MACs (minimised)."""
    size = float(space.encode([arch], kind="ordinal").sum())
    return [size, float(space.macs(arch))][:n]


def _run(cls: SamplerClass, n_objectives: int, seed: int = 7) -> Any:
    """A study of ``N_TRIALS`` trials asked of the sampler and told synthetic values."""
    import optuna

    cfg = _config(cls, n_objectives, seed)
    sampler = cls.create(cfg)
    _expect(isinstance(sampler, optuna.samplers.BaseSampler),
            f"{cls.__name__}.create() gave {sampler!r}, not an Optuna sampler")
    space = get_space(SPACE)
    dists = distributions(space)
    study = optuna.create_study(directions=[o.direction for o in cfg.objective_list],
                                sampler=sampler)
    for _ in range(N_TRIALS):
        trial = study.ask(dists)
        study.tell(trial, _values(space, arch_from_params(space, trial.params), n_objectives))
    return study


def _objective_counts(cls: SamplerClass) -> list[int]:
    return [1, 2] if cls.multi_objective else [1]


# ---------------------------------------------------------------------- the checks
def check_is_sampler(cls: SamplerClass) -> None:
    """A :class:`SearchSampler` subclass that says whether it handles several objectives."""
    _expect(isinstance(cls, type) and issubclass(cls, SearchSampler),
            f"{cls!r} is not a SearchSampler subclass")
    _expect(isinstance(cls.multi_objective, bool),
            f"{cls.__name__}.multi_objective must be a bool")


def check_samples_within_the_distributions(cls: SamplerClass) -> None:
    """It builds an Optuna sampler whose every suggestion lies in the search's distributions
    and gives a valid subnet, with one objective (and two, when it handles several)."""
    import optuna

    space = get_space(SPACE)
    dists = distributions(space)
    with _quiet():
        for n in _objective_counts(cls):
            trials = _run(cls, n).get_trials(deepcopy=False)
            _expect(len(trials) == N_TRIALS and all(
                t.state == optuna.trial.TrialState.COMPLETE for t in trials),
                f"{n} objective(s): not every one of {N_TRIALS} trials completed")
            for t in trials:
                _expect(set(t.params) == set(dists), f"a trial suggested {sorted(t.params)}")
                for key, value in t.params.items():
                    _expect(dists[key]._contains(dists[key].to_internal_repr(value)),
                            f"{key} = {value!r} is outside {dists[key]}")
                space.parse(arch_from_params(space, t.params).to_dict())


def check_the_same_seed_gives_the_same_trials(cls: SamplerClass) -> None:
    """The config's seed fixes the suggestions: the same seed, the same trials; another
    seed, other trials."""
    def params(seed: int) -> list[dict[str, Any]]:
        with _quiet():
            study = _run(cls, _objective_counts(cls)[-1], seed)
        return [t.params for t in study.get_trials(deepcopy=False)]

    first = params(3)
    _expect(params(3) == first, "two studies with seed 3 suggested different trials")
    _expect(params(4) != first, "seeds 3 and 4 suggested the same trials")


def check_objectives_or_a_clear_refusal(cls: SamplerClass) -> None:
    """One that handles several objectives finds a Pareto front of two; one that does not is
    refused two, in one line naming it, by its config and by :meth:`SearchSampler.create`."""
    if cls.multi_objective:
        with _quiet():
            _expect(_run(cls, 2).best_trials, "no Pareto-optimal trial with two objectives")
        return
    for what, attempt in (("check_objectives(2)", lambda: cls.check_objectives(2)),
                          ("create(cfg, 2)", lambda: cls.create(_config(cls, 1), 2))):
        try:
            attempt()
        except ConfigError as exc:
            text = str(exc)
            _expect("\n" not in text and f"sampler {cls.name!r} handles one objective" in text,
                    f"{what} gave {text!r}, not one line saying it handles one objective")
        else:
            raise AssertionError(f"{cls.__name__}.{what} took two objectives")


#: the checks of every sampler, in order (``Registry(checks=...)`` of SAMPLERS)
SAMPLER_CHECKS: tuple[Callable[[SamplerClass], None], ...] = (
    check_is_sampler, check_samples_within_the_distributions,
    check_the_same_seed_gives_the_same_trials, check_objectives_or_a_clear_refusal,
)
