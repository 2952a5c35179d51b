"""The evolving-loss schedule (paper Section 4, Section 7.2 and Appendix D) as a state machine.

Training runs through stages of (learning rate, depth ``d`` of the fractal Tanimoto loss
``1 - <FT>^d``). At each learning-rate reduction the loss is made steeper towards optimality by a
larger depth. For change detection the paper uses ``(1e-3, 0), (1e-4, 10), (1e-5, 20), (1e-6, 30)``,
moving on whenever the validation loss stops decreasing (Appendix D); for CIFAR-10 (Section 7.2,
Fig. 11) it reduces the learning rate at fixed epochs 250 and 350 with depths 0 -> 15 -> 30.

Two choices the paper leaves open are parameters here: how many epochs without improvement count as
"stopped decreasing" (``patience``; the paper gives no number), and when training ends. The paper's
Pareto selection (Section 8.5.2, Fig. 13) picks among the checkpoints of the last, most evolved stage,
which Fig. 13 shows running for many epochs; ``final_stage_epochs`` gives that stage a fixed length, so
that the selection has that many candidates.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

Stage = Tuple[float, int]


def _check_stages(stages: Sequence[Sequence[Any]]) -> List[Stage]:
    if not stages:
        raise ValueError("evolving-loss schedule: stages must not be empty")
    checked = []
    for i, stage in enumerate(stages):
        if len(stage) != 2:
            raise ValueError(f"evolving-loss schedule: stage {i} must be (lr, depth), got {stage!r}")
        lr, depth = stage
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"evolving-loss schedule: stage {i} learning rate must be a number > 0, got {lr!r}")
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
            raise ValueError(f"evolving-loss schedule: stage {i} depth must be an integer >= 0, got {depth!r}")
        checked.append((float(lr), int(depth)))
    return checked


def _check_milestones(milestones: Sequence[Any], n_stages: int) -> List[int]:
    if len(milestones) != n_stages - 1:
        raise ValueError(f"evolving-loss schedule: {n_stages} stages need {n_stages - 1} milestones, "
                         f"got {list(milestones)}")
    previous = 0
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m <= previous:
            raise ValueError(f"evolving-loss schedule: milestones must be increasing integers > 0, "
                             f"got {list(milestones)}")
        previous = m
    return [int(m) for m in milestones]


class EvolvingLossSchedule:
    """Learning rate and FT-loss depth per epoch; call :meth:`step` once at the end of every epoch.

    Two ways to move to the next stage:

    * plateau (default, Appendix D): when the validation loss has not decreased (by more than
      ``min_delta``) for ``patience`` consecutive epochs (the paper gives no number; 3 is this
      repository's default, see :class:`utilities.training.config.TrainConfig`). The best loss and the patience
      counter are reset at every stage change, since the loss with a new depth is on another scale.
      After the last stage plateaus, :attr:`finished` becomes True and further steps do nothing.
    * milestones (Section 7.2): at the end of epoch ``milestones[i]`` (counting from 1, i.e. the
      ``milestones[i]``-th call of :meth:`step`) stage ``i + 1`` begins; the validation loss is
      ignored and :attr:`finished` stays False (the epoch budget ends the run).

    With ``final_stage_epochs``, in either mode, the last stage instead lasts exactly that many
    epochs (no plateau test in it), after which :attr:`finished` becomes True.

    Parameters
    ----------
    stages : sequence of (float, int)
        ``(learning rate, FT depth)`` of each stage, in order.
    patience : int
        Non-improving epochs before moving on (plateau mode). 0 and 1 both move on at the first
        epoch without improvement.
    milestones : sequence of int, optional
        Epoch counts at which to move on; one fewer than ``stages``. Selects milestone mode.
    min_delta : float
        A loss counts as an improvement when it is below ``best - min_delta``.
    final_stage_epochs : int, optional
        Length in epochs of the last stage (None: it ends like the others, see above).
    """

    def __init__(self, stages: Sequence[Sequence[Any]], patience: int = 3,
                 milestones: Optional[Sequence[int]] = None, min_delta: float = 0.0,
                 final_stage_epochs: Optional[int] = None):
        self.stages = _check_stages(stages)
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"evolving-loss schedule: patience must be an integer >= 0, got {patience!r}")
        if final_stage_epochs is not None and (isinstance(final_stage_epochs, bool) or not isinstance(
                final_stage_epochs, numbers.Integral) or final_stage_epochs < 1):
            raise ValueError(f"evolving-loss schedule: final_stage_epochs must be an integer >= 1, "
                             f"got {final_stage_epochs!r}")
        if min_delta < 0:
            raise ValueError(f"evolving-loss schedule: min_delta must be >= 0, got {min_delta!r}")
        self.patience = int(patience)
        self.milestones = None if milestones is None else _check_milestones(milestones, len(self.stages))
        self.min_delta = float(min_delta)
        self.final_stage_epochs = None if final_stage_epochs is None else int(final_stage_epochs)
        self.stage = 0
        self.epoch = 0
        self.stage_epochs = 0
        self.best: Optional[float] = None
        self.wait = 0
        self.finished = False

    @classmethod
    def from_depths(cls, lr: float, depths: Sequence[int], factor: float = 10.0,
                    **kwargs: Any) -> EvolvingLossSchedule:
        """Stages ``(lr / factor**i, depths[i])``: the paper divides the learning rate by 10 at every
        change of depth (Section 4). ``kwargs`` go to the constructor."""
        if factor <= 0:
            raise ValueError(f"evolving-loss schedule: factor must be > 0, got {factor!r}")
        return cls([(lr / factor ** i, d) for i, d in enumerate(depths)], **kwargs)

    @property
    def lr(self) -> float:
        """Learning rate of the current stage."""
        return self.stages[self.stage][0]

    @property
    def depth(self) -> int:
        """FT-loss depth of the current stage."""
        return self.stages[self.stage][1]

    def step(self, val_loss: Optional[float] = None) -> bool:
        """Record the end of an epoch with its validation loss (unused in milestone mode).

        Returns
        -------
        bool
            True if a new stage begins with the next epoch.
        """
        if self.finished:
            return False
        if self.milestones is None and (val_loss is None or not math.isfinite(val_loss)):
            raise ValueError(f"evolving-loss schedule: plateau mode needs a finite validation loss, got {val_loss!r}")
        self.epoch += 1
        self.stage_epochs += 1
        if self.final_stage_epochs is not None and self.stage + 1 == len(self.stages):
            self.finished = self.stage_epochs >= self.final_stage_epochs
            return False
        if self.milestones is not None:
            return self._advance() if self.epoch in self.milestones else False
        if self.best is None or val_loss < self.best - self.min_delta:
            self.best, self.wait = float(val_loss), 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        if self.stage + 1 == len(self.stages):
            self.finished = True
            return False
        return self._advance()

    def _advance(self) -> bool:
        self.stage += 1
        self.best, self.wait, self.stage_epochs = None, 0, 0
        return True

    def state_dict(self) -> Dict[str, Any]:
        """The configuration and progress, JSON-serialisable, for :meth:`load_state_dict`."""
        return {
            "stages": [list(s) for s in self.stages], "patience": self.patience, "milestones": self.milestones,
            "min_delta": self.min_delta, "final_stage_epochs": self.final_stage_epochs, "stage": self.stage,
            "epoch": self.epoch, "stage_epochs": self.stage_epochs, "best": self.best, "wait": self.wait,
            "finished": self.finished,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`. The configuration must match this schedule's (a state saved
        before ``final_stage_epochs`` existed counts as ``final_stage_epochs`` None).

        Raises
        ------
        ValueError
            If the saved configuration differs (resuming it would silently change the schedule).
        """
        for key in ("stages", "patience", "milestones", "min_delta", "final_stage_epochs"):
            if state.get(key) != self.state_dict()[key]:
                raise ValueError(f"evolving-loss schedule: saved {key} {state.get(key)!r} differ from the "
                                 f"configured {self.state_dict()[key]!r}")
        self.stage, self.epoch, self.wait = int(state["stage"]), int(state["epoch"]), int(state["wait"])
        self.stage_epochs = int(state.get("stage_epochs", 0))
        self.best = None if state["best"] is None else float(state["best"])
        self.finished = bool(state["finished"])
