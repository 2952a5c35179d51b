"""Are training runs bit-identical? Record what a run computes, find the first difference, check checkpoints.

    python benchmarks/determinism.py record -c CONFIG --run-dir DIR --out rec1     # one traced train.py run
    python benchmarks/determinism.py diff rec1 rec2                                # the first operation that differs
    python benchmarks/determinism.py check --repeats 3 [--load 2] [--ranks 1 2]    # SHA-256 of checkpoints

``record`` runs ``train.py``'s own ``main`` in this process (with ``horovodrun``, one record per rank) and
writes, in order, the SHA-256 (and float64 sum) of every array it sees: every forward-backward pass's inputs and
targets, the inputs and outputs of every operator of the hybridized network, forward and backward
(``HybridBlock.register_op_hook(..., monitor_all=True)``), the per-sample loss and the pass's gradients; at every
optimiser update the gradients it used (summed over the passes, after ``DistributedTrainer``'s all-reduce) and
every parameter after it; the operators of the shape-inferring forward and of validation. Each entry is
labelled with the phase of the run (``start``, ``pass N``, ``update N``, ``validation after update N``).
Every array is copied to NumPy as it is seen, which waits for MXNet's engine after each operator. The
gradients and parameters of the first ``--keep`` updates are also kept whole, for the size of a difference. A
non-hybridized model (``model.hybridize: false``) gets the output of every block instead of every operator.
``diff`` walks two records in step and names the first entry whose bytes differ (phase, what it is, shape, and
the largest difference where it is known).

``check`` trains fresh tiny runs (``fractalresnet_tiny`` on the real LEVIR-CD samples in ``../shared/data``, 64x64
chips, 2 epochs of ``--steps`` steps) in pairs with 1 and 2 ranks (``horovodrun -np 2 -H localhost:2 --gloo``),
each pair ``--repeats`` times, idle and, with ``--load N``, next to N busy processes (benchmarks/soak.py); it
compares the SHA-256 of the pair's ``.params`` and ``.states`` of every epoch and prints one line per pair and a
summary; exit status 1 when any pair differs. Extra environment for the runs: ``--env NAME=VALUE``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
SAMPLES = ROOT.parent / "shared" / "data" / "levircd_samples"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ----------------------------------------------------------------------------------------------------- record
class Recorder:
    """Digests of every array a traced run computes, in order, labelled by the phase of the run."""

    def __init__(self, keep_steps: int) -> None:
        self.entries: List[Dict[str, Any]] = []
        self.arrays: Dict[str, np.ndarray] = {}
        self.phase = "start"
        self.keep_steps = keep_steps
        self.passes = 0  # forward-backward passes so far
        self.step = 0  # optimiser updates so far

    def add(self, kind: str, name: str, array: np.ndarray, keep: bool = False) -> None:
        array = np.ascontiguousarray(array)
        entry = {"phase": self.phase, "kind": kind, "name": name, "shape": list(array.shape),
                 "dtype": str(array.dtype), "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
        if array.dtype.kind == "f" and array.size:
            with np.errstate(all="ignore"):
                entry["sum"] = float(array.astype(np.float64).sum())
        if keep:
            key = f"a{len(self.entries)}"
            self.arrays[key] = array
            entry["array"] = key
        self.entries.append(entry)

    def op_hook(self, name: bytes, op_name: bytes, handle) -> None:
        """``HybridBlock.register_op_hook`` callback: digest the operator's input or output array."""
        import ctypes

        from mxnet.base import NDArrayHandle
        from mxnet.ndarray import NDArray

        array = NDArray(ctypes.cast(handle, NDArrayHandle), writable=False)
        self.add("op", f"{op_name.decode()}:{name.decode()}", array.asnumpy())

    def block_hook(self, block, inputs, outputs) -> None:
        """``Block.register_forward_hook`` callback (non-hybridized models): digest the block's outputs."""
        from mxnet.ndarray import NDArray

        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            if isinstance(out, NDArray):  # not the symbols of a hybridized block's graph building
                self.add("block", f"{block.name}[{i}]", out.asnumpy())

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "record.json").write_text(json.dumps(self.entries))
        np.savez(out / "arrays.npz", **self.arrays)


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


def record(config: str, run_dir: str, out: Path, keep: int) -> int:
    """Run train.py's ``main`` traced by a :class:`Recorder`; each rank saves its record under ``out/rank<r>``."""
    import train  # after the path insert; imports nn first (threads), then Horovod and MXNet

    rec = Recorder(keep)
    get_model, forward_backward, update, validate = (train.get_model, train.forward_backward, train.update,
                                                     train.validate)

    def traced_model(*args, **kwargs):
        net = get_model(*args, **kwargs)
        net.register_op_hook(rec.op_hook, monitor_all=True)  # used by hybridized blocks
        for block in _walk(net):  # used when the model is not hybridized
            block.register_forward_hook(rec.block_hook)
        return net

    def gradients(net, keep: bool) -> None:
        for name, p in net.collect_params().items():
            if p.grad_req != "null":
                rec.add("gradient", name, p.grad().asnumpy(), keep=keep)

    def traced_forward_backward(net, loss_fn, inputs, targets, *args, **kwargs):
        rec.passes += 1
        rec.phase = f"pass {rec.passes}"
        for kind, arrays in (("input", inputs), ("target", targets)):
            for i, x in enumerate(arrays):
                rec.add("batch", f"{kind} {i}", x.asnumpy())
        loss, outputs = forward_backward(net, loss_fn, inputs, targets, *args, **kwargs)
        rec.add("loss", "per sample", loss.asnumpy())
        gradients(net, keep=False)  # this pass's own gradients
        return loss, outputs

    def traced_update(net, trainer, *args, **kwargs):
        rec.step += 1
        rec.phase = f"update {rec.step}"
        update(net, trainer, *args, **kwargs)
        kept = rec.step <= rec.keep_steps
        gradients(net, keep=kept)  # what the update used: summed over the passes, all-reduced over the ranks
        for name, p in net.collect_params().items():
            rec.add("parameter", name, p.data().asnumpy(), keep=kept)

    def traced_validate(net, *args, **kwargs):
        rec.phase = f"validation after update {rec.step}"
        metrics = validate(net, *args, **kwargs)
        rec.phase = f"after validation, update {rec.step}"
        return metrics

    train.get_model, train.forward_backward, train.update, train.validate = (
        traced_model, traced_forward_backward, traced_update, traced_validate)
    train.hvd.init()
    rank = train.hvd.rank()
    try:
        return train.run_rank(lambda _: train.main(["-c", config, "--run-dir", run_dir]), train.FAILURES)
    finally:
        rec.save(out / f"rank{rank}")


# ------------------------------------------------------------------------------------------------------- diff
def load_record(folder: Path) -> Tuple[List[Dict[str, Any]], Any]:
    """A record's entries and its kept arrays (an ``np.load`` of ``arrays.npz``)."""
    return json.loads((folder / "record.json").read_text()), np.load(folder / "arrays.npz")


def _label(entry: Dict[str, Any]) -> tuple:
    return entry["phase"], entry["kind"], entry["name"], entry["shape"], entry["dtype"]


def first_difference(a: Path, b: Path) -> Optional[str]:
    """The first entry of two records whose label or bytes differ, in words; None when they agree."""
    (ea, aa), (eb, ab) = load_record(a), load_record(b)
    for i, (x, y) in enumerate(zip(ea, eb)):
        if _label(x) != _label(y):
            return f"entry {i}: the runs took different paths: {_label(x)} against {_label(y)}"
        if x["sha256"] != y["sha256"]:
            size = ""
            if "array" in x and "array" in y:
                d = np.abs(aa[x["array"]].astype(np.float64) - ab[y["array"]].astype(np.float64))
                size = f", {int((d > 0).sum())} of {d.size} values differ, largest by {d.max():.3g}"
            elif "sum" in x:
                size = f", sums {x['sum']!r} and {y['sum']!r}"
            same = sum(1 for e, f in zip(ea[:i], eb[:i]) if e["phase"] == x["phase"])
            return (f"entry {i} ({same} identical before it in the same phase): {x['phase']}, {x['kind']} "
                    f"{x['name']} {tuple(x['shape'])} {x['dtype']} differs{size}")
    if len(ea) != len(eb):
        return f"one record ends after {min(len(ea), len(eb))} entries, the other has {max(len(ea), len(eb))}"
    return None


def diff(a: Path, b: Path) -> int:
    """Print, per rank, the first difference between the records ``a`` and ``b``; 1 when any rank's differ."""
    ranks = sorted(p.name for p in a.glob("rank*"))
    status = 0
    for rank in ranks:
        found = first_difference(a / rank, b / rank)
        entries = len(json.loads((a / rank / "record.json").read_text()))
        print(f"{rank}: " + (f"all {entries} entries identical" if found is None else f"first difference: {found}"))
        status |= found is not None
    return status


# ------------------------------------------------------------------------------------------------------ check
def write_check_config(folder: Path, data_root: Path, steps: int, epochs: int) -> Path:
    """A tiny training: ``fractalresnet_tiny``, 64x64 chips, batch 2, ``epochs`` epochs of ``steps`` steps."""
    split = {"train_split": None, "val_split": None} if (data_root / "A").is_dir() else {}
    config = {
        "data": {"kind": "levircd", "root": str(data_root), "chip_size": 64, "stride": 64, **split},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 2, "depths": [0, 1], "patience": 3, "max_epochs": epochs,
                  "max_steps_per_epoch": steps, "max_val_steps": 4},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def checkpoint_digests(run_dir: Path) -> Dict[str, str]:
    """SHA-256 of every ``.params`` and ``.states`` file of a run's checkpoints, by file name."""
    from utilities.artifacts.checkpoint import file_digest

    files = sorted((run_dir / "checkpoints").glob("epoch_*.params")) + sorted((run_dir / "checkpoints").glob(
        "epoch_*.states"))
    return {f.name: file_digest(f) for f in files}


def parameter_difference(a: Path, b: Path) -> str:
    """How two ``.params`` files differ: arrays that differ and the largest difference."""
    import mxnet as mx

    pa, pb = mx.nd.load(str(a)), mx.nd.load(str(b))
    diffs = {k: float(np.abs(pa[k].asnumpy().astype(np.float64) - pb[k].asnumpy()).max()) for k in pa}
    differing = [v for v in diffs.values() if v > 0]
    return f"{len(differing)} of {len(diffs)} parameter arrays differ, largest by {max(differing, default=0):.3g}"


def train_once(config: Path, run_dir: Path, ranks: int, env: Dict[str, str], timeout: float) -> None:
    """One fresh ``train.py`` run (with ``horovodrun --gloo`` for more than one rank); raises on failure."""
    from soak import run_job

    command = [sys.executable, "train.py", "-c", str(config), "--run-dir", str(run_dir)]
    if ranks > 1:
        command = [str(HOROVODRUN), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *command]
    status, output, _ = run_job(command, env, timeout, cwd=str(ROOT))
    if status != 0:
        raise RuntimeError(f"training ({' '.join(command)}) ended with status {status}:\n{output[-3000:]}")


def compare_pair(config: Path, folder: Path, ranks: int, env: Dict[str, str], timeout: float) -> Optional[str]:
    """Train twice from scratch; None when every checkpoint file is byte-identical, else what differs."""
    runs = [folder / "a", folder / "b"]
    for run_dir in runs:
        train_once(config, run_dir, ranks, env, timeout)
    first, second = (checkpoint_digests(r) for r in runs)
    if not first or first.keys() != second.keys():
        return f"different checkpoint files: {sorted(first)} and {sorted(second)}"
    differing = [name for name in first if first[name] != second[name]]
    if not differing:
        return None
    params = [n for n in differing if n.endswith(".params")]
    detail = ""
    if params:
        detail = f" (first .params: {parameter_difference(*(r / 'checkpoints' / params[0] for r in runs))})"
    return f"differ: {', '.join(differing)}{detail}"


def check(args: argparse.Namespace) -> int:
    from soak import busy_processes

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mantis-determinism-"))
    out.mkdir(parents=True, exist_ok=True)
    data_root = SAMPLES
    if not data_root.is_dir():
        from utilities.data.synthetic import write_levircd_layout

        data_root = out / "levir"
        if not data_root.exists():
            write_levircd_layout(data_root, n_per_split={"train": 2, "val": 1}, size=128, seed=0)
    config = write_check_config(out, data_root, args.steps, args.epochs)
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **dict(item.split("=", 1) for item in args.env))
    print(f"# {args.repeats} pair(s) per setting of fresh train.py runs ({args.epochs} epochs of {args.steps} "
          f"steps, fractalresnet_tiny, 64x64 chips of {data_root}), {os.cpu_count()} cores, extra environment "
          f"{args.env or 'none'}; runs under {out}", flush=True)
    loads = [0] + ([args.load] if args.load else [])
    results = []
    for load in loads:
        with ExitStack() as stack:
            stack.enter_context(busy_processes(load))
            for ranks in args.ranks:
                for pair in range(1, args.repeats + 1):
                    where = f"{ranks} rank(s), {'idle' if not load else f'{load} busy process(es)'}, pair {pair}"
                    folder = out / f"load{load}_ranks{ranks}_pair{pair}"
                    found = compare_pair(config, folder, ranks, env, args.timeout)
                    results.append(found is None)
                    print(f"{where}: " + ("checkpoints identical (SHA-256 of every .params and .states)"
                                          if found is None else found), flush=True)
    print(f"{results.count(True)} of {len(results)} pairs byte-identical")
    return 0 if all(results) else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run train.py traced, one record per rank")
    rec.add_argument("-c", "--config", required=True)
    rec.add_argument("--run-dir", required=True)
    rec.add_argument("--out", required=True, help="record folder (rank<r>/record.json, arrays.npz)")
    rec.add_argument("--keep", type=int, default=2, help="updates whose gradients and parameters are kept whole")
    dif = sub.add_parser("diff", help="the first difference between two records")
    dif.add_argument("a")
    dif.add_argument("b")
    chk = sub.add_parser("check", help="pairs of fresh tiny trainings: are their checkpoints byte-identical?")
    chk.add_argument("--repeats", type=int, default=3, help="pairs per rank count and load")
    chk.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts (horovodrun --gloo above 1)")
    chk.add_argument("--load", type=int, default=0, help="also run every pair next to this many busy processes")
    chk.add_argument("--epochs", type=int, default=2)
    chk.add_argument("--steps", type=int, default=6, help="training steps per epoch")
    chk.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="extra environment of the runs")
    chk.add_argument("--timeout", type=float, default=600, help="seconds before a run counts as hung")
    chk.add_argument("--out", help="folder for the runs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.command == "record":
        return record(args.config, args.run_dir, Path(args.out), args.keep)
    if args.command == "diff":
        return diff(Path(args.a), Path(args.b))
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
