"""Select the checkpoints of a training run by Pareto efficiency of MCC and <FT>^d (paper Section 8.5.2).

    python select_models.py runs/levir                                         # recorded validation metrics
    python select_models.py runs/levir --levircd data/LEVIR-CD --split val     # measured again on val
    python select_models.py runs/levir --levircd data/LEVIR-CD --split val --compare --keep-recorded

Candidates are the checkpoints of the most evolved stage (the highest FT depth of the run). Writes to
--out (default: the run directory) ``selection.json`` (every candidate, its metrics, on the front or not),
``pareto.png`` (as the paper's Fig. 13), ``ensemble.json`` (the front, outputs averaged: the paper's use)
and ``ensemble_params.json`` (the front, parameters averaged). ``--compare`` evaluates the best single
checkpoint by MCC, the output ensemble and the parameter average on the data and writes ``compare.json``
and ``compare.md``. The files appear together when all are written, the ensembles last, or none does (a
full disk, Ctrl-C). Checkpoints whose parameters are damaged (not the SHA-256 of their record) are no
candidates, with a warning naming each; none left is an error. (Not named ``select.py``: that would shadow
Python's ``select`` module, which ``subprocess`` imports, for anything run from the repository root.)
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from utilities.atomic import FileSet, atomic_files, writable_folder
from utilities.cli import add_data_arguments, data_description, entry_point
from utilities.errors import InputError
from utilities.inference.data_options import data_samples
from utilities.inference.evaluation import Evaluation, metrics_table, result_row
from utilities.inference.selection import (
    ENSEMBLE_FILES,
    best_single,
    compare_models,
    comparison_rows,
    mark_front,
    recompute_metrics,
    stage_candidates,
    write_selection,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="training run directory (with checkpoints/epoch_*.json)")
    parser.add_argument("--out", help="output folder (default: the run directory)")
    parser.add_argument("--compare", action="store_true",
                        help="evaluate best single / output ensemble / parameter average on the data")
    parser.add_argument("--keep-recorded", action="store_true",
                        help="select with the recorded validation metrics even when data is given")
    parser.add_argument("--threshold", type=float, default=0.5, help="change probability threshold (default 0.5)")
    add_data_arguments(parser, split="val")
    return parser.parse_args(argv)


def _compare(args: argparse.Namespace, out: Path, candidates, samples, files: FileSet) -> Dict[str, Evaluation]:
    """Evaluate the best single checkpoint and the ensembles written in ``files`` (read from their temporary
    files); write ``compare.json`` and ``compare.md`` into ``files``."""
    best = best_single(candidates)
    ensembles = {"output ensemble": out / ENSEMBLE_FILES["outputs"],
                 "parameter average": out / ENSEMBLE_FILES["parameters"]}
    models = {f"best single (epoch {best.epoch})": best.params, **ensembles}
    staged = {**models, **{name: files.staged(path) for name, path in ensembles.items()}}
    evaluations = compare_models(staged, samples, args.threshold)
    report = {"data": data_description(args), "threshold": args.threshold,
              "models": {name: {"spec": str(models[name]), **result_row(e.counts, e.metrics)}
                         for name, e in evaluations.items()}}
    files.write_text(out / "compare.json", json.dumps(report, indent=2))
    files.write_text(out / "compare.md", f"# Model selection compared on {data_description(args)}\n\n"
                     + metrics_table(comparison_rows(evaluations)))
    return evaluations


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    has_data = args.levircd is not None or args.oscd is not None or args.date1 is not None
    if args.compare and not has_data:
        raise InputError("--compare needs labelled data: --levircd ROOT [--split val] or --date1/--date2/--label")
    samples = data_samples(args) if has_data else None
    out = writable_folder(args.out or args.run_dir, "--out" if args.out else "run directory")
    candidates = stage_candidates(args.run_dir)
    source = "recorded validation metrics (checkpoint records)"
    if samples is not None and not args.keep_recorded:
        recompute_metrics(candidates, samples, args.threshold)
        source = f"measured on {data_description(args)}"
    front = mark_front(candidates)
    evaluations: Dict[str, Evaluation] = {}
    with atomic_files() as files:  # all the outputs appear together, or none does
        written: List[Path] = list(write_selection(candidates, out, source, files).values())
        if args.compare:
            evaluations = _compare(args, out, candidates, samples, files)
            written += [out / "compare.json", out / "compare.md"]
    print(f"FT depth {candidates[0].depth} stage: {len(candidates)} candidate(s), Pareto front epochs "
          f"{[c.epoch for c in front]} ({source})")
    for name, evaluation in evaluations.items():
        print(f"{name}: MCC {evaluation.metrics['mcc']:.4f} F1 {evaluation.metrics['f1']:.4f}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


main = entry_point(_main)

if __name__ == "__main__":
    sys.exit(main())
