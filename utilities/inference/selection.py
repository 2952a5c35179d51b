"""Model selection by Pareto efficiency of MCC and <FT>^d (paper Section 8.5.2, Fig. 13).

After the last learning-rate reduction (the *most evolved* stage of the evolving loss: the highest FT
depth ``d`` reached) the validation MCC and the validation <FT>^d do not always agree on the best
epoch. The paper keeps every checkpoint of that stage on the Pareto front of (MCC, <FT>^d) -- the
checkpoints that no other one beats on both -- and averages the inference outputs of all of them.

:func:`stage_candidates` reads the stage's checkpoints and their recorded validation metrics (or
:func:`recompute_metrics` measures them again on a validation set), :func:`mark_front` finds the front,
:func:`write_selection` writes ``selection.json``, ``pareto.png`` and two ensemble files for
:func:`utilities.artifacts.model_io.load_predictor`: ``ensemble.json`` (mode ``outputs``, the paper's) and
``ensemble_params.json`` (mode ``parameters``: one network with the members' mean parameters). They appear
together or not at all, the ensembles last. Checkpoints whose parameters were pruned or are damaged (not the
SHA-256 their record holds) are no candidates: a warning names them.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)
from nn import mean_fractal_tanimoto

import numpy as np
from matplotlib.figure import Figure
from mxnet import nd

from utilities.artifacts.checkpoint import CheckpointRecord, Checkpoints, file_digest
from utilities.artifacts.model_card import card_path, spec_card
from utilities.artifacts.model_io import checkpoint_record, load_predictor
from utilities.atomic import FileSet, atomic_files
from utilities.data.datasets import Sample
from utilities.errors import InputError
from utilities.inference.evaluation import Evaluation, Prediction, evaluate, finite_or_none

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

ENSEMBLE_FILES = {"outputs": "ensemble.json", "parameters": "ensemble_params.json"}


@dataclass
class Candidate:
    """One checkpoint of the most evolved stage with its validation MCC and <FT>^d."""

    epoch: int
    params: Path
    depth: int
    mcc: float
    ft: float
    on_front: bool = False

    @property
    def finite(self) -> bool:
        return math.isfinite(self.mcc) and math.isfinite(self.ft)


def _metric(record: CheckpointRecord, key: str) -> float:
    value = record.metrics.get(key)
    return math.nan if value is None else float(value)


def _damage(params: Path, record: CheckpointRecord) -> Optional[str]:
    """Why the existing parameters file of ``record`` cannot be used, or None (its SHA-256, when recorded,
    is checked)."""
    if params.stat().st_size == 0:
        return "the file is empty"
    if record.params_sha256 is not None and file_digest(params) != record.params_sha256:
        return "its content differs from the SHA-256 in its record (a truncated or damaged copy)"
    return None


def stage_candidates(run_dir: PathLike) -> List[Candidate]:
    """The checkpoints of the most evolved stage of a run (highest ``metrics.depth`` among its records).

    Records whose parameters were pruned (``output.keep_checkpoints``) are skipped with one warning; those
    whose parameters are damaged (empty, or not the SHA-256 their record holds) with one warning each,
    naming the file.

    Raises
    ------
    InputError
        The run has no checkpoint records, or none of the stage's parameter files is there intact.
    """
    checkpoints = Checkpoints(run_dir)
    records = [r for r in checkpoints.records() if "depth" in r.metrics]
    if not records:
        raise InputError(f"run directory {run_dir} has no checkpoint records with metrics "
                         f"({checkpoints.dir}/epoch_*.json, written by train.py)")
    depth = max(int(r.metrics["depth"]) for r in records)
    candidates, pruned, damaged = [], [], []
    for record in records:
        if int(record.metrics["depth"]) != depth:
            continue
        params = checkpoints.dir / record.params
        if not params.exists():
            pruned.append(record.epoch)
            continue
        damage = _damage(params, record)
        if damage is not None:
            log.warning("checkpoint %s cannot be read: %s; epoch %d is not a candidate", params, damage,
                        record.epoch)
            damaged.append(record.epoch)
            continue
        candidates.append(Candidate(int(record.epoch), params, depth, _metric(record, "val_mcc"),
                                    _metric(record, "val_ft")))
    if pruned:
        log.warning("epochs %s of the FT depth %d stage have no parameters any more (pruned): not candidates",
                    pruned, depth)
    if not candidates:
        skipped = ", ".join(f"epochs {epochs} {why}" for epochs, why in ((pruned, "pruned"), (damaged, "damaged"))
                            if epochs)
        raise InputError(f"no checkpoint of the last stage (FT depth {depth}) of {run_dir} has intact parameters "
                         f"({skipped}): nothing to select")
    return candidates


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Which rows of ``points`` (n, k) are non-dominated when every column is maximised.

    A point is dominated when another is at least as good in every column and better in one. Equal
    points do not dominate each other (duplicates on the front are all kept). Rows with NaN are never on
    the front.

    Returns
    -------
    numpy.ndarray
        bool (n,).
    """
    points = np.asarray(points, dtype=np.float64)
    finite = np.isfinite(points).all(axis=1)
    good = points[finite]
    at_least = (good[:, None, :] >= good[None, :, :]).all(axis=2)   # [i, j]: i >= j everywhere
    better = (good[:, None, :] > good[None, :, :]).any(axis=2)      # [i, j]: i > j somewhere
    dominated = (at_least & better).any(axis=0)
    front = np.zeros(len(points), dtype=bool)
    front[np.flatnonzero(finite)[~dominated]] = True
    return front


def mark_front(candidates: Sequence[Candidate]) -> List[Candidate]:
    """Set ``on_front`` on the candidates on the (MCC, <FT>) Pareto front; returns the front.

    Candidates with a NaN metric are left out with a warning.
    """
    excluded = [c.epoch for c in candidates if not c.finite]
    if excluded:
        log.warning("epochs %s have a NaN validation MCC or <FT>: left out of the Pareto front", excluded)
    front = pareto_front(np.array([[c.mcc, c.ft] for c in candidates]).reshape(-1, 2))
    for candidate, on in zip(candidates, front):
        candidate.on_front = bool(on)
    chosen = [c for c in candidates if c.on_front]
    if not chosen:
        raise InputError("no candidate has finite validation MCC and <FT>: nothing to select")
    return chosen


def _one_hot(label: np.ndarray, classes: int) -> np.ndarray:
    change = label.astype(np.float32)
    return (change[None] if classes == 1 else np.stack([1 - change, change]))[None]


def checkpoint_scores(params: PathLike, samples: Sequence[Sample], depth: int, axis: Sequence[int],
                      threshold: float = 0.5) -> Tuple[Evaluation, float]:
    """Evaluate one checkpoint on labelled samples: metrics (pooled counts) and the mean per-image <FT>^d
    of the segmentation against the one-hot label, reduced over ``axis`` as in training (over a whole
    image: its strips are gathered first; validation tiles are predicted whole anyway)."""
    fts, strips = [], []

    def measure_ft(item: Prediction) -> None:
        strips.append(item)
        if not item.last:
            return
        segmentation = nd.array(np.concatenate([s.outputs[0] for s in strips], axis=1)[None])
        target = nd.array(_one_hot(np.concatenate([s.label for s in strips]), segmentation.shape[1]))
        strips.clear()
        fts.append(float(mean_fractal_tanimoto(nd, segmentation, target, depth, tuple(axis)).mean().asscalar()))

    evaluation = evaluate(load_predictor(params), samples, threshold, observe=measure_ft)
    return evaluation, float(np.mean(fts))


def _loss_axis(params: Path) -> List[int]:
    return CheckpointRecord.read(params.with_suffix(".json")).config.get("train", {}).get("loss_axis", [2, 3])


def recompute_metrics(candidates: Sequence[Candidate], samples: Sequence[Sample], threshold: float = 0.5) -> None:
    """Replace the recorded validation MCC and <FT>^d of each candidate by values measured on ``samples``."""
    for candidate in candidates:
        evaluation, candidate.ft = checkpoint_scores(candidate.params, samples, candidate.depth,
                                                     _loss_axis(candidate.params), threshold)
        candidate.mcc = evaluation.metrics["mcc"]


def plot_pareto(candidates: Sequence[Candidate], path: PathLike, files: Optional[FileSet] = None) -> None:
    """Fig. 13 of the paper: MCC and <FT>^d over the stage's epochs (front: filled cyan dots) and MCC
    against <FT>^d (front: open cyan circles joined by its staircase), as PNG (one of ``files`` when given,
    :func:`~utilities.atomic.atomic_files`)."""
    depth = candidates[0].depth
    shown = sorted((c for c in candidates if c.finite), key=lambda c: c.epoch)
    front = [c for c in shown if c.on_front]
    fig = Figure(figsize=(7, 10), layout="constrained")  # rendered by Agg, no GUI backend involved
    ax_mcc, ax_ft, ax_pair = fig.subplots(3, 1)
    ft_name = rf"$\langle FT \rangle^{{{depth}}}$"
    for ax, key, name in ((ax_mcc, "mcc", "MCC"), (ax_ft, "ft", ft_name)):
        ax.plot([c.epoch for c in shown], [getattr(c, key) for c in shown], "-", color="0.4", marker=".")
        ax.plot([c.epoch for c in front], [getattr(c, key) for c in front], "o", color="c", markersize=8,
                label="Pareto front")
        ax.set(xlabel="epoch", ylabel=f"validation {name}")
        ax.legend(loc="best")
    ax_pair.plot([c.mcc for c in shown], [c.ft for c in shown], ".", color="0.4", label="checkpoints")
    staircase = sorted(front, key=lambda c: c.mcc)
    ax_pair.plot([c.mcc for c in staircase], [c.ft for c in staircase], "-", color="c", linewidth=1)
    ax_pair.plot([c.mcc for c in front], [c.ft for c in front], "o", markerfacecolor="none", markeredgecolor="c",
                 markersize=12, label="Pareto front")
    for c in front:
        ax_pair.annotate(str(c.epoch), (c.mcc, c.ft), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax_pair.set(xlabel="validation MCC", ylabel=f"validation {ft_name}",
                title=f"FT depth {depth} stage: {len(front)} of {len(candidates)} checkpoints on the front")
    ax_pair.legend(loc="best")
    with atomic_files(files) as files, files.path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def write_ensembles(front: Sequence[Candidate], out_dir: PathLike, files: Optional[FileSet] = None) -> Dict[str, Path]:
    """``ensemble.json`` and ``ensemble_params.json`` listing the front's parameters relative to ``out_dir``,
    each with its model card (:func:`~utilities.artifacts.model_card.spec_card`) (all or none; with the other
    files of ``files`` when given, after them, :func:`~utilities.atomic.atomic_files`)."""
    out_dir = Path(out_dir)
    members = [_relative(c.params, out_dir) for c in front]
    checkpoints = [checkpoint_record(c.params) for c in front]
    written = {}
    with atomic_files(files) as files:
        for mode, name in ENSEMBLE_FILES.items():
            written[mode] = out_dir / name
            card = spec_card(written[mode], checkpoints, mode)  # its model card, ensemble.stac.json
            files.write_text(card_path(written[mode]), json.dumps(card, indent=2) + "\n")
            files.write_text(written[mode], json.dumps({"members": members, "mode": mode,
                                                        "epochs": [c.epoch for c in front]}, indent=2), last=True)
    return written


def write_selection(candidates: Sequence[Candidate], out_dir: PathLike, source: str,
                    files: Optional[FileSet] = None) -> Dict[str, Path]:
    """Write ``selection.json`` (every candidate, its metrics and whether it is on the front), ``pareto.png``
    and the ensemble files for the candidates' front (:func:`mark_front` first): all or none, the ensembles
    last, with the other files of ``files`` when given (:func:`~utilities.atomic.atomic_files`)."""
    out_dir = Path(out_dir)
    rows = [{"epoch": c.epoch, "params": _relative(c.params, out_dir), "val_mcc": finite_or_none(c.mcc),
             "val_ft": finite_or_none(c.ft), "on_front": c.on_front} for c in candidates]
    selection = {"stage_depth": candidates[0].depth, "metrics": source, "maximised": ["val_mcc", "val_ft"],
                 "front_epochs": [c.epoch for c in candidates if c.on_front], "candidates": rows}
    written = {"selection": out_dir / "selection.json", "plot": out_dir / "pareto.png"}
    with atomic_files(files) as files:
        files.write_text(written["selection"], json.dumps(selection, indent=2))
        plot_pareto(candidates, written["plot"], files)
        written.update(write_ensembles([c for c in candidates if c.on_front], out_dir, files))
    return written


def best_single(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the highest MCC (then the highest <FT>, then the latest epoch)."""
    finite = [c for c in candidates if c.finite]
    if not finite:
        raise InputError("no candidate has finite validation MCC and <FT>")
    return max(finite, key=lambda c: (c.mcc, c.ft, c.epoch))


def compare_models(models: Dict[str, PathLike], samples: Sequence[Sample],
                   threshold: float = 0.5) -> Dict[str, Evaluation]:
    """Evaluate each named model spec on the same samples (e.g. best single, output ensemble, parameter
    average)."""
    return {name: evaluate(load_predictor(spec), samples, threshold) for name, spec in models.items()}


def comparison_rows(evaluations: Dict[str, Evaluation]) -> List[Tuple[str, np.ndarray, Dict[str, float]]]:
    """``(name, pooled counts, metrics)`` per model, for :func:`utilities.inference.evaluation.metrics_table`."""
    return [(name, e.counts, e.metrics) for name, e in evaluations.items()]
