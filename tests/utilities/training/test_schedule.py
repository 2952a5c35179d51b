"""Evolving-loss schedule (paper Section 4, Section 7.2, Appendix D)."""
import json

import numpy as np
import pytest

from utilities.training.config import Config
from utilities.training.schedule import EvolvingLossSchedule

PAPER_CD = [(1e-3, 0), (1e-4, 10), (1e-5, 20), (1e-6, 30)]  # Appendix D


def _run(schedule, losses):
    """Step through ``losses``; return (lr, depth) in force after each step."""
    out = []
    for loss in losses:
        schedule.step(loss)
        out.append((schedule.lr, schedule.depth))
    return out


def test_from_depths_divides_lr_by_ten():
    s = EvolvingLossSchedule.from_depths(1e-3, [0, 10, 20, 30])
    assert [lr for lr, _ in s.stages] == pytest.approx([lr for lr, _ in PAPER_CD])
    assert [d for _, d in s.stages] == [0, 10, 20, 30]
    assert (s.lr, s.depth, s.patience) == (1e-3, 0, 3)


def test_plateau_moves_to_next_stage_after_patience_epochs():
    s = EvolvingLossSchedule(PAPER_CD, patience=3)
    assert not s.step(1.0)                   # first value: the best so far
    assert not s.step(1.0) and not s.step(1.2)  # two epochs without improvement
    assert s.step(1.1)                       # the third: next stage
    assert (s.lr, s.depth, s.stage, s.wait, s.best) == (1e-4, 10, 1, 0, None)


def test_improvement_resets_patience():
    s = EvolvingLossSchedule(PAPER_CD, patience=3)
    trace = _run(s, [1.0, 1.1, 1.1, 0.9, 1.0, 1.0])  # the improvement at 0.9 restarts the count
    assert trace == [(1e-3, 0)] * 6 and s.wait == 2
    s.step(0.95)
    assert (s.lr, s.depth) == (1e-4, 10)


def test_min_delta():
    s = EvolvingLossSchedule(PAPER_CD, patience=1, min_delta=0.1)
    s.step(1.0)
    assert s.step(0.95)  # not better by more than 0.1


def test_best_is_reset_at_a_stage_change():
    # the loss at a new depth is on another scale: a higher value must not count as a plateau
    s = EvolvingLossSchedule(PAPER_CD, patience=1)
    _run(s, [0.2, 0.3])
    assert s.stage == 1
    assert not s.step(0.5) and s.best == 0.5


def test_finished_after_last_stage_plateaus():
    s = EvolvingLossSchedule([(1e-3, 0), (1e-4, 15)], patience=2)
    _run(s, [1.0, 1.0, 1.0])
    assert s.stage == 1 and not s.finished
    _run(s, [1.0, 1.0])
    assert not s.finished
    assert not s.step(1.0)
    assert s.finished and (s.lr, s.depth) == (1e-4, 15)
    epoch = s.epoch
    assert not s.step(0.1) and s.epoch == epoch  # steps after the end do nothing


def test_patience_zero_moves_on_at_the_first_non_improvement():
    s = EvolvingLossSchedule(PAPER_CD, patience=0)
    assert not s.step(1.0)
    assert s.step(1.0)


def test_milestones_section_7_2():
    s = EvolvingLossSchedule.from_depths(1e-3, [0, 15, 30], milestones=[250, 350])
    trace = _run(s, [None] * 400)  # the validation loss is not needed
    assert trace[248] == (1e-3, 0)
    assert trace[249] == pytest.approx((1e-4, 15))  # from epoch 251 (1-based) on
    assert trace[348] == pytest.approx((1e-4, 15))
    assert trace[349] == pytest.approx((1e-5, 30))
    assert trace[-1] == pytest.approx((1e-5, 30)) and not s.finished


def test_fixed_single_stage_never_changes():
    s = EvolvingLossSchedule([(1e-3, 0)], milestones=[])
    _run(s, [1.0] * 20)
    assert (s.lr, s.depth, s.finished) == (1e-3, 0, False)


@pytest.mark.parametrize("milestones", [None, [3, 6, 9]])
def test_state_dict_round_trip_resumes_identically(milestones):
    losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.4, 0.45, 0.46, 0.47, 0.48]
    whole = EvolvingLossSchedule(PAPER_CD, patience=2, milestones=milestones)
    expected = _run(whole, losses)

    first = EvolvingLossSchedule(PAPER_CD, patience=2, milestones=milestones)
    head = _run(first, losses[:5])
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    resumed = EvolvingLossSchedule(PAPER_CD, patience=2, milestones=milestones)
    resumed.load_state_dict(state)
    assert head + _run(resumed, losses[5:]) == expected
    assert resumed.state_dict() == whole.state_dict()


def test_load_state_dict_refuses_another_configuration():
    state = EvolvingLossSchedule(PAPER_CD, patience=3).state_dict()
    with pytest.raises(ValueError, match="saved patience 3 differ from the configured 2"):
        EvolvingLossSchedule(PAPER_CD, patience=2).load_state_dict(state)


@pytest.mark.parametrize("kwargs, message", [
    (dict(stages=[]), "stages must not be empty"),
    (dict(stages=[(1e-3, 0.5)]), r"stage 0 depth must be an integer >= 0, got 0.5"),
    (dict(stages=[(1e-3, 0), (1e-4, -1)]), r"stage 1 depth must be an integer >= 0, got -1"),
    (dict(stages=[(0.0, 0)]), r"stage 0 learning rate must be a number > 0, got 0.0"),
    (dict(stages=[(1e-3,)]), r"stage 0 must be \(lr, depth\)"),
    (dict(stages=PAPER_CD, patience=-1), r"patience must be an integer >= 0, got -1"),
    (dict(stages=PAPER_CD, milestones=[250]), r"4 stages need 3 milestones, got \[250\]"),
    (dict(stages=PAPER_CD, milestones=[5, 5, 9]), r"milestones must be increasing integers > 0"),
    (dict(stages=PAPER_CD, final_stage_epochs=0), r"final_stage_epochs must be an integer >= 1, got 0"),
    (dict(stages=PAPER_CD, final_stage_epochs=2.5), r"final_stage_epochs must be an integer >= 1, got 2.5"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvolvingLossSchedule(**kwargs)


def test_plateau_mode_needs_a_finite_loss():
    s = EvolvingLossSchedule(PAPER_CD)
    with pytest.raises(ValueError, match="finite validation loss"):
        s.step(float("nan"))


# ----------------------------------------------------------------------------- the final stage's length

def test_final_stage_lasts_exactly_final_stage_epochs_in_plateau_mode():
    """The last stage runs its fixed number of epochs whatever the loss does (no plateau test in it);
    the earlier stages still move on at plateaus."""
    for losses in ([1.0] * 40, list(np.linspace(1.0, 0.1, 40))):  # flat: it would plateau; falling: it would not
        s = EvolvingLossSchedule(PAPER_CD, patience=2, final_stage_epochs=12)
        depths = []
        for loss in [1.0, 1.0, 1.0] * 3 + losses:
            if s.finished:
                break
            depths.append(s.depth)
            s.step(loss)
        assert depths == [0] * 3 + [10] * 3 + [20] * 3 + [30] * 12 and s.finished


def test_final_stage_length_in_milestone_mode():
    s = EvolvingLossSchedule.from_depths(1e-3, [0, 15, 30], milestones=[5, 8], final_stage_epochs=4)
    trace = _run(s, [None] * 20)
    assert s.finished and s.epoch == 12 and len(trace) == 20
    assert [d for _, d in trace[:12]] == [0] * 4 + [15] * 3 + [30] * 5  # (lr, depth) in force after each step


def test_single_stage_with_final_stage_epochs():
    s = EvolvingLossSchedule([(1e-3, 0)], milestones=[], final_stage_epochs=3)
    _run(s, [None] * 5)
    assert s.finished and s.epoch == 3


def test_resume_inside_the_final_stage():
    losses = [1.0, 1.0, 1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.45, 0.3, 0.35, 0.2, 0.1]
    whole = EvolvingLossSchedule(PAPER_CD, patience=2, final_stage_epochs=5)
    expected = _run(whole, losses)
    first = EvolvingLossSchedule(PAPER_CD, patience=2, final_stage_epochs=5)
    head = _run(first, losses[:11])
    assert first.stage == 3 and first.stage_epochs == 2 and not first.finished
    resumed = EvolvingLossSchedule(PAPER_CD, patience=2, final_stage_epochs=5)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + _run(resumed, losses[11:]) == expected
    assert resumed.state_dict() == whole.state_dict() and resumed.finished


def test_state_saved_without_final_stage_epochs():
    """A state saved before the final stage's length was a setting resumes where it is not set, and is
    refused where it is."""
    state = EvolvingLossSchedule(PAPER_CD).state_dict()
    del state["final_stage_epochs"], state["stage_epochs"]
    EvolvingLossSchedule(PAPER_CD).load_state_dict(state)
    with pytest.raises(ValueError, match="saved final_stage_epochs None differ from the configured 20"):
        EvolvingLossSchedule(PAPER_CD, final_stage_epochs=20).load_state_dict(state)


def test_default_config_gives_pareto_selection_at_least_10_candidates():
    """With the training defaults, the most evolved stage (highest depth, where Pareto selection picks:
    Section 8.5.2) has at least 10 epochs, hence 10 checkpoints, whatever the validation losses do; the
    patience default is 3."""
    train = Config().train
    assert train.patience == 3 and train.final_stage_epochs >= 10
    rng = np.random.default_rng(0)
    for losses in (rng.uniform(0.1, 1.0, 500), np.r_[np.linspace(1.0, 0.1, 100), np.full(400, 0.1)], np.ones(500)):
        s = EvolvingLossSchedule.from_depths(train.lr, train.depths, factor=train.lr_factor, patience=train.patience,
                                             milestones=train.milestones, final_stage_epochs=train.final_stage_epochs)
        depths = []
        for loss in losses:
            if s.finished:
                break
            depths.append(s.depth)
            s.step(float(loss))
        assert s.finished and depths.count(max(train.depths)) == train.final_stage_epochs >= 10
