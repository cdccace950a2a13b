"""The one n_trials tally (blocknas.search.study.tally), as the study runner, the ablation runner and the
report read it, on real in-memory Optuna studies whose trials end each way the rule names."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from blocknas.search.ablation import make_plan
from blocknas.search.ablation.runner import collect_cells
from blocknas.search.report.data import state_counts
from blocknas.search.study import DUPLICATE_OF_ATTR, SURPLUS_ATTR, retried_trials, trial_counts
from blocknas.search.study.attrs import OVER_BUDGET_ATTR
from blocknas.search.study.retry import retry_interrupted
from blocknas.search.study.tally import outcome, past_total
from tests.helpers.configs import ablation


def _retried(study: optuna.Study) -> None:
    """An interrupted trial: its retry is queued (Optuna's retry bookkeeping), then it is failed."""
    trial = study.ask()
    retry_interrupted(trial)
    study.tell(trial, state=TrialState.FAIL)


def _surplus(study: optuna.Study) -> None:
    """A trial numbered past n_trials when two workers raced: discarded before it ran."""
    trial = study.ask()
    trial.set_user_attr(SURPLUS_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)


def test_each_outcome_counts_as_the_rule_says() -> None:
    study = optuna.create_study()
    study.add_trial(create_trial(value=0.5))  # 0 complete
    study.add_trial(create_trial(value=0.4, user_attrs={DUPLICATE_OF_ATTR: 0}))  # 1 copied trial 0
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={OVER_BUDGET_ATTR: "params"}))  # 2
    study.add_trial(create_trial(state=TrialState.PRUNED))  # 3 stopped by the pruner
    study.add_trial(create_trial(state=TrialState.FAIL))  # 4 an error: counts
    _surplus(study)  # 5
    study.ask()  # 6 running
    _retried(study)  # 7 failed and retried; 8 is its WAITING retry (ask() would start it first)
    trials = study.get_trials()
    retried = retried_trials(trials)
    assert retried == {7}
    assert [outcome(t, retried) for t in trials] == [
        *["counted"] * 5, "surplus", "running", "retried", "waiting",
    ]  # fmt: skip
    assert trial_counts(study) == (5, 1)
    assert past_total(trials, 7, n_trials=6) and not past_total(trials, 7, n_trials=7)
    assert state_counts(study) == {
        "complete": 2, "over budget": 1, "pruned": 1, "failed": 1, "retried": 1, "discarded": 1, "running": 1,
        "waiting": 1,
    }  # fmt: skip


def test_an_ablation_cell_is_finished_only_by_a_trial_that_counts() -> None:
    config = ablation(seeds=1)
    plan = make_plan(config, config.base_arch())
    first, second = (v.name for v in plan)
    study = optuna.create_study()
    distributions = {"variant": CategoricalDistribution([first, second]), "seed": CategoricalDistribution([0])}
    study.add_trial(create_trial(value=0.5, params={"variant": first, "seed": 0}, distributions=distributions))
    study.enqueue_trial({"variant": second, "seed": 0})
    trial = study.ask(distributions)  # the second cell, numbered past the total by a racing worker
    trial.set_user_attr(SURPLUS_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)
    cells = {c.variant: c.state for c in collect_cells(study, plan, (0,))}
    assert cells[first] == "COMPLETE"
    assert cells[second] == "MISSING", "a surplus trial never ran: its cell is still to do"
