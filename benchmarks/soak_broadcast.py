"""Soak Horovod's MXNet broadcast: N consecutive 2-rank jobs of many small in-place broadcasts.

    python benchmarks/soak_broadcast.py                          # 20 jobs x 200 rounds x 100 arrays
    python benchmarks/soak_broadcast.py --jobs 10 --load 2       # under load: 2 busy processes alongside
    make soak

``hvd.broadcast_parameters`` is a burst of in-place ``broadcast_`` calls, one per parameter. Each job here
repeats that pattern on small arrays (``--rounds`` rounds of ``--arrays`` broadcasts, then ``nd.waitall()``) and
checks that every array ends with rank 0's values. Small arrays make a broadcast complete quickly on Horovod's
background thread, which is what exposed the use-after-free that scripts/horovod-0.28.1-mxnet-op-name.patch
fixes: an unpatched Horovod 0.28.1 crashed (SIGSEGV) in 2 of 10 such jobs here, about one crash per 100,000
broadcasts. A failed job's whole output (with the faulthandler stacks of a crashing rank) is kept under
``OUT/failures/job_NNN.txt``. Prints one line per job and a summary; exits 1 when any job failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from soak import busy_processes, run_job

HOROVODRUN = Path(sys.executable).parent / "horovodrun"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="consecutive 2-rank horovodrun jobs")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of broadcasts per job")
    parser.add_argument("--arrays", type=int, default=100, help="arrays broadcast per round")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes run alongside (CPU load)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a job counts as hung")
    parser.add_argument("--out", help="folder for failure logs (default: a new temporary folder)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one rank's part of a job
    return parser.parse_args(argv)


def worker(rounds: int, arrays: int) -> int:
    """One rank: ``rounds`` x ``arrays`` in-place broadcasts from rank 0; exits 1 if a value differs."""
    import faulthandler

    faulthandler.enable(all_threads=True)
    import horovod.mxnet as hvd
    from mxnet import nd

    hvd.init()
    rank = hvd.rank()
    values = [nd.full((4,), float(rank + 1) * (i + 1)) for i in range(arrays)]
    for _ in range(rounds):
        for i, value in enumerate(values):
            hvd.broadcast_(value, root_rank=0, name=f"soak.{i}")
        nd.waitall()
    wrong = [i for i, value in enumerate(values) if (value.asnumpy() != float(i + 1)).any()]
    hvd.shutdown()
    if wrong:
        print(f"rank {rank}: arrays {wrong[:5]} do not hold rank 0's values", file=sys.stderr)
    return 1 if wrong else 0


def job(index: int, out: Path, args: argparse.Namespace) -> dict:
    """One 2-rank ``horovodrun`` job; its output is kept under ``out/failures`` if it failed."""
    command = [str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, __file__, "--worker",
               "--rounds", str(args.rounds), "--arrays", str(args.arrays)]
    status, output, seconds = run_job(command, dict(os.environ, OMP_NUM_THREADS="1"), args.timeout)
    record = dict(job=index, status=status, seconds=seconds)
    if status != 0:
        kept = out / "failures" / f"job_{index:03d}.txt"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(output)
        record["kept"] = str(kept)
    return record


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.rounds, args.arrays)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mantis-soak-broadcast-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}: {args.jobs} jobs of 2 ranks x {args.rounds} "
          f"rounds x {args.arrays} broadcasts, {args.load} busy process(es) alongside, {os.cpu_count()} cores; "
          f"output {out}", flush=True)
    records = []
    with busy_processes(args.load):
        for index in range(1, args.jobs + 1):
            records.append(job(index, out, args))
            print(json.dumps(records[-1]), flush=True)
    failed = [r for r in records if r["status"] != 0]
    print(f"{len(failed)} failed job(s) in {len(records)} ({len(records) * args.rounds * args.arrays} broadcasts "
          f"per rank; statuses {[r['status'] for r in failed]}); failures kept under {out / 'failures'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
