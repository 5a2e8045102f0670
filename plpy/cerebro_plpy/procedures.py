"""Searchers that suggest configs from results so far: TPE (optuna's sampler).

Nothing is kept between calls: the study is rebuilt from the workload's configs
and metrics each time, so whatever the user did (stop, resume, add, clone) is
simply part of the history.
"""

from __future__ import annotations

from typing import Any

from cerebro_plpy import roster, search_space
from cerebro_plpy.search_space import Choices, Dimension


def distributions(model: str, space: dict[str, Any], registered: bool = False) -> dict[str, Any]:
    """The optuna distribution of each key of ``space`` (the dashboard's param importance uses them too)."""
    dimensions = search_space.parse(model, space, registered)
    declared = search_space.declared_params(model, space, registered)
    return {key: _distribution(dim, declared[key].kind) for key, dim in dimensions.items()}


def _distribution(dim: Dimension, kind: type) -> Any:
    import optuna

    if isinstance(dim, Choices):
        return optuna.distributions.CategoricalDistribution(list(dim.values))
    if kind is int:
        return optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)


def fits(distribution: Any, value: Any) -> bool:
    """Whether ``value`` lies in ``distribution`` (a config added or cloned by hand may not)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def tpe_suggest(
    model: str,
    space: dict[str, Any],
    history: list[tuple[dict[str, Any], float | None]],
    count: int,
    seed: int,
    feature_shape: tuple[int, ...],
    startup: int,
    registered: bool = False,
) -> list[dict[str, Any]]:
    """``count`` new configs' complete params, from TPE over ``history``.

    ``history`` holds each existing config's params with its best validation
    metric, or None while it has none yet (a running trial: TPE's constant liar
    keeps new suggestions away from it). Configs whose params lie outside the
    space (added or cloned by hand) are left out of the model.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaced = distributions(model, space, registered)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for params, value in history:
        point = {key: params.get(key) for key in spaced}
        if not all(fits(spaced[key], v) for key, v in point.items()):
            continue
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.RUNNING
        study.add_trial(optuna.trial.create_trial(params=point, distributions=spaced, value=value, state=state))
    suggestions = []
    for _ in range(count):
        trial = study.ask(spaced)
        point = {key: value.item() if hasattr(value, "item") else value for key, value in trial.params.items()}
        suggestions.append(roster.validate(model, point, feature_shape, registered))
    return suggestions
