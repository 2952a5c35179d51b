"""The authors' implementation and mantis side by side in one run: training step, first call, peak RSS.

    python benchmarks/side_by_side.py                           # D6nf32, 3 variants x 1 and 2 threads, batch 1
    python benchmarks/side_by_side.py --variants ceecnetv2 --threads 2 --rounds 2
    python benchmarks/side_by_side.py --fidelities paper authors
    python benchmarks/side_by_side.py --fidelities paper paper+memory-saving      # also with train.memory_saving
    python benchmarks/side_by_side.py --variants ceecnetv2 --threads 2 --batch 3 --fidelities paper+memory-saving
    python benchmarks/side_by_side.py --size 64 --nfilters 32 --depth 4 --nheads-start 2 --psp-depth 2  # smoke test

The authors' public code (feevos/ceecnet) is imported from ``../shared/reference`` next to the
repository (``--reference`` elsewhere); without it the script prints why and exits 0. For every
thread count, variant and round it runs the authors' network and then mantis's (one run per
``--fidelities`` entry, passed to ``mantis.get_model(..., fidelity=...)``; ``paper`` is the default
model), each measurement in a fresh process with ``OMP_NUM_THREADS`` set before MXNet loads. Both sides
get the same seeded inputs (two dates of ``--size`` squared, batch ``--batch``) and targets, the FT
multitask loss at depth 5 (their ``mtsk_loss``, mantis's ``MultitaskFTLoss``), Adam, Xavier
initialisation, ``hybridize()``. A child measures the first forward call (graph build + run), then one
warm-up training step and ``--repeats`` timed ones (forward + backward + ``trainer.step``), and reports
its own peak RSS (``ru_maxrss``). A mantis fidelity the installed code does not offer is skipped with
the reason. Prints a markdown table (median step seconds, ratio authors / mantis, first calls, peak
RSS; with several rounds every round's value), mantis's 1-thread / 2-thread speed-up, and the machine,
command and date. Absolute seconds move with the load of a shared machine: compare within one run.
A fidelity ending in ``+memory-saving`` runs mantis with ``train.memory_saving``. A child killed by a
signal is reported as such: at ``--nfilters 16`` the authors' CEECNets die of SIGFPE in their first
backward pass (MKLDNN's Concat backward on thin blocked-layout inputs), hence the smoke test's 32 filters.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import cpu  # noqa: E402

#: mantis unit name -> the authors' ``model`` argument
VARIANTS: Dict[str, str] = {"fractalresnet": "FracTALResNet", "ceecnetv1": "CEECNetV1", "ceecnetv2": "CEECNetV2"}
#: depth of the FT loss in every step (the paper's training starts at 0 and rises; 5 exercises the depth sum)
LOSS_DEPTH = 5
#: the mantis fidelity ``get_model`` builds without a ``fidelity`` argument
DEFAULT_FIDELITY = "paper"
#: suffix of a ``--fidelities`` entry that runs mantis with ``train.memory_saving``: ``paper+memory-saving``
MEMORY_SAVING = "memory-saving"
#: the side that runs the authors' code (not a mantis fidelity)
AUTHORS = "reference"


def _authors_network(variant: str, args: argparse.Namespace) -> Tuple[object, Callable]:
    sys.path.insert(0, str(Path(args.reference).resolve()))
    from ceecnet.models.changedetection.mantis.mantis_dn import mantis_dn_cmtsk
    from ceecnet.nn.loss.mtsk_loss import mtsk_loss
    from mxnet import nd

    net = mantis_dn_cmtsk(nfilters_init=args.nfilters, depth=args.depth, NClasses=2, ftdepth=5,
                          psp_depth=args.psp_depth, norm_type="GroupNorm", norm_groups=4,
                          nheads_start=args.nheads_start, model=VARIANTS[variant], verbose=False)
    criterion = mtsk_loss(depth=LOSS_DEPTH, NClasses=2)
    return net, lambda segm, bound, dist, target: criterion.loss([segm, bound, dist],
                                                                  nd.concat(target, target, target, dim=1))


def _mantis_network(variant: str, args: argparse.Namespace, fidelity: str) -> Tuple[object, Callable]:
    sys.path.insert(0, str(ROOT))
    import nn  # noqa: F401  (threads first)
    from nn import MultitaskFTLoss

    from mantis import get_model
    from utilities.training.memory import return_freed_memory

    fidelity, _, option = fidelity.partition("+")
    if option == MEMORY_SAVING:
        return_freed_memory()
    elif option:
        raise ValueError(f"unknown mantis option {option!r} (known: {MEMORY_SAVING})")

    options = {} if fidelity == DEFAULT_FIDELITY else {"fidelity": fidelity}
    net = get_model(f"{variant}_d6nf32", nfilters=args.nfilters, depth=args.depth, nheads_start=args.nheads_start,
                    psp_depth=args.psp_depth, ftdepth=5, **options)
    criterion = MultitaskFTLoss(depth=LOSS_DEPTH)
    return net, lambda segm, bound, dist, target: criterion(segm, bound, dist, target, target, target)


def measure(side: str, variant: str, args: argparse.Namespace) -> dict:
    """In a child process: first call, training steps and peak RSS of one side's network."""
    try:
        net, loss_fn = (_authors_network(variant, args) if side == AUTHORS
                        else _mantis_network(variant, args, side))
    except (TypeError, ValueError) as error:  # a fidelity this version of mantis does not have
        return {"unavailable": f"{type(error).__name__}: {error}"}
    import mxnet as mx
    import numpy as np
    from mxnet import gluon, nd

    sys.path.insert(0, str(ROOT))
    from utilities.training.step import train_step

    mx.random.seed(args.seed)
    rng = np.random.RandomState(args.seed)
    shape = (args.batch, 3, args.size, args.size)
    date1, date2 = nd.array(rng.uniform(size=shape)), nd.array(rng.uniform(size=shape))
    labels = nd.array(rng.randint(0, 2, size=(args.batch, args.size, args.size)))
    target = nd.one_hot(labels, 2).transpose((0, 3, 1, 2))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    tic = time.perf_counter()
    net(date1, date2)[0].wait_to_read()
    first = time.perf_counter() - tic
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-4})
    steps = []
    for _ in range(args.repeats + 1):  # the first is the warm-up (training graph build)
        tic = time.perf_counter()
        train_step(net, trainer, loss_fn, (date1, date2), (target,))
        nd.waitall()
        steps.append(time.perf_counter() - tic)
    parameters = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    return {"step_s": statistics.median(steps[1:]), "steps_s": steps[1:], "first_call_s": first,
            "parameters": int(parameters),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def run_child(side: str, variant: str, threads: int, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process with ``threads`` OpenMP threads; ``{"failed": reason}`` if it died."""
    env = {k: v for k, v in os.environ.items() if k not in ("MANTIS_THREADS", "MANTIS_AUTO_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    forwarded = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in
                 ("batch", "size", "nfilters", "depth", "nheads_start", "psp_depth", "repeats", "seed", "reference")]
    out = subprocess.run([sys.executable, __file__, "--child", side, "--child-variant", variant, *forwarded],
                         capture_output=True, text=True, env=env)
    if out.returncode < 0:
        name = signal.Signals(-out.returncode).name
        return {"failed": f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")}
    if out.returncode:
        lines = out.stderr.strip().splitlines()
        return {"failed": lines[-1] if lines else f"exit code {out.returncode}, no message"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(runs: List[dict], key: str, fmt: str) -> str:
    return " / ".join(run.get("failed", "failed") if key not in run else format(run[key], fmt) for run in runs)


def _ratios(authors: List[dict], mantis: List[dict]) -> List[float]:
    return [a["step_s"] / m["step_s"] for a, m in zip(authors, mantis) if "step_s" in a and "step_s" in m]


def row(threads: int, variant: str, fidelity: str, authors: List[dict], mantis: List[dict]) -> str:
    ratios = _ratios(authors, mantis)
    ratio = " / ".join(f"{r:.1f}x" for r in ratios) or "-"
    if len(ratios) > 1:
        ratio += f" (median {statistics.median(ratios):.1f}x)"
    cells = [str(threads), variant, fidelity, _cell(authors, "step_s", ".2f"), _cell(mantis, "step_s", ".2f"), ratio,
             _cell(authors, "first_call_s", ".1f"), _cell(mantis, "first_call_s", ".1f"),
             _cell(authors, "peak_rss_gib", ".2f"), _cell(mantis, "peak_rss_gib", ".2f"),
             _cell(authors[:1], "parameters", ","), _cell(mantis[:1], "parameters", ",")]
    return f"| {' | '.join(cells)} |"


def thread_speedups(results: Dict[Tuple[int, str, str], List[dict]]) -> List[str]:
    """Lines "variant fidelity: 1 thread x s, 2 threads y s: z x" for every side measured at both."""
    lines = []
    for (threads, variant, side), runs in sorted(results.items()):
        other = results.get((2, variant, side))
        if threads != 1 or not other:
            continue
        one = [r["step_s"] for r in runs if "step_s" in r]
        two = [r["step_s"] for r in other if "step_s" in r]
        if one and two:
            one_s, two_s = statistics.median(one), statistics.median(two)
            lines.append(f"- {variant}, {side}: 1 thread {one_s:.2f} s, 2 threads {two_s:.2f} s: "
                         f"{one_s / two_s:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--fidelities", nargs="+", default=[DEFAULT_FIDELITY],
                        help="mantis fidelities (get_model(..., fidelity=...)), each optionally with "
                             f"+{MEMORY_SAVING} (train.memory_saving); unavailable ones are skipped")
    parser.add_argument("--rounds", type=int, default=1, help="authors / mantis alternations per variant and threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps per process (after one warm-up)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--nfilters", type=int, default=32)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--nheads-start", type=int, default=4)
    parser.add_argument("--psp-depth", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"),
                        help="directory holding the authors' ceecnet package")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.child_variant, args)))
        return
    if not (Path(args.reference) / "ceecnet").is_dir():
        print(f"skipped: the authors' code is not at {Path(args.reference) / 'ceecnet'} (give --reference)")
        return

    print(f"command: {' '.join([sys.executable] + sys.argv)}")
    print(f"start: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {cpu()}, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"D{args.depth}nf{args.nfilters} (nheads_start {args.nheads_start}, psp_depth {args.psp_depth}), batch "
          f"{args.batch}, two dates of {args.size}x{args.size}, hybridized, FT multitask loss depth {LOSS_DEPTH}, "
          f"Adam; median of {args.repeats} steps after a warm-up; {args.rounds} round(s), each side in its own "
          f"process; +{MEMORY_SAVING}: mantis with train.memory_saving\n")
    print("| threads | variant | mantis fidelity | authors' step s | mantis step s | ratio | authors' first call s | "
          "mantis first call s | authors' peak RSS GiB | mantis peak RSS GiB | authors' parameters | "
          "mantis parameters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results: Dict[Tuple[int, str, str], List[dict]] = {}
    unavailable: Dict[str, str] = {}
    for threads in args.threads:
        for variant in args.variants:
            for _ in range(args.rounds):
                for side in [AUTHORS] + [f for f in args.fidelities if f not in unavailable]:
                    result = run_child(side, variant, threads, args)
                    print(f"{threads} thread(s), {variant}, {side}: {json.dumps(result)}", file=sys.stderr, flush=True)
                    if "unavailable" in result:
                        unavailable[side] = result["unavailable"]
                        continue
                    results.setdefault((threads, variant, side), []).append(result)
            for fidelity in args.fidelities:
                if (threads, variant, fidelity) in results:
                    print(row(threads, variant, fidelity, results[threads, variant, AUTHORS],
                              results[threads, variant, fidelity]), flush=True)
    print()
    for fidelity, reason in unavailable.items():
        print(f"mantis fidelity {fidelity!r} skipped: {reason}")
    speedups = thread_speedups(results)
    if speedups:
        print("Step time 1 thread / 2 threads (medians):")
        print("\n".join(speedups))
    print(f"end: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
