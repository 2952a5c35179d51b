"""train.py end to end, as users run it: one process, two Horovod ranks, kill and resume, bad input.

Data: the project's own synthetic scenes written in the LEVIR-CD layout (utilities/data/synthetic.py),
chipped at 32x32 so that a tiny model trains in seconds.
"""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
import yaml

from utilities.artifacts.checkpoint import Checkpoints
from utilities.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOROVODRUN = Path(sys.executable).parent / "horovodrun"


def write_config(folder: Path, data: dict, **sections) -> Path:
    config = {
        "data": {"kind": "levircd", "chip_size": 32, "stride": 32, **data},
        "model": {"name": "fractalresnet_tiny"},
        "train": {"batch_size": 2, "depths": [0, 1], "patience": 1, "max_epochs": 3, "max_steps_per_epoch": 2},
        "output": {"run_dir": str(folder / "run")},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(args, timeout=300, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def history(run_dir: Path) -> list:
    return json.loads((run_dir / "history.json").read_text())


def horovodrun(logs: Path, *args, timeout=300):
    """``horovodrun --gloo`` of ``python ARGS`` on 2 local ranks, each rank's stdout/stderr kept whole under ``logs``
    (``--output-filename``), with ``PYTHONFAULTHANDLER=1`` (a crashing rank prints its Python stacks)."""
    command = [str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", "--output-filename", str(logs),
               sys.executable, *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def every_rank(result, logs: Path) -> str:
    """horovodrun's exit status and output, then every rank's whole stderr."""
    parts = [f"horovodrun exit status {result.returncode}\n{result.stdout}{result.stderr}"]
    for stderr in sorted(logs.glob("rank.*/stderr")):
        parts.append(f"----- {stderr.parent.name} stderr (whole) -----\n{stderr.read_text(errors='replace')}")
    return "\n".join(parts)


def assert_ranks_succeeded(result, logs: Path) -> None:
    """Fail with every rank's whole stderr (pytest.fail: pytest shortens assertion messages, not this)."""
    if result.returncode != 0:
        pytest.fail(every_rank(result, logs), pytrace=False)


def test_single_process_run(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    rows = history(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"])
        assert 0 <= r["val_ft"] <= 1 and r["rank_spread"] == 0
        assert {"val_precision", "val_recall", "val_f1", "val_mcc", "val_iou"} <= set(r)
    assert (run_dir / "history.csv").read_text().startswith("epoch,lr,depth,train_loss")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 2 and saved["train"]["lr"] == 1e-3  # resolved: defaults filled in
    latest = Checkpoints(run_dir).latest()
    assert latest.epoch == 3 and latest.model == "fractalresnet_tiny" and latest.normalization is not None
    for name in (latest.params, latest.states):
        assert (run_dir / "checkpoints" / name).exists()
    # a second run into the same folder without --resume refuses instead of overwriting
    again = run([sys.executable, "train.py", "-c", str(cfg)])
    assert again.returncode == 2 and "already holds checkpoints: use --resume" in again.stderr


def test_evolving_loss_moves_through_the_stages_and_ends(tmp_path, scenes):
    """With a learning rate too small to change the validation loss, every epoch after the first of
    a stage is a plateau: patience 1 moves to depth 1 with lr / 10 after two epochs; the last stage
    runs its train.final_stage_epochs (3), then training ends."""
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"lr": 1e-12, "max_epochs": 10, "final_stage_epochs": 3})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = history(tmp_path / "run")
    assert [r["depth"] for r in rows] == [0, 0, 1, 1, 1]
    assert [r["lr"] for r in rows] == pytest.approx([1e-12, 1e-12, 1e-13, 1e-13, 1e-13])
    assert "training finished: last stage ended" in result.stdout


def test_authors_fidelity_reaches_the_run(tmp_path, scenes):
    """fidelity: authors resolves the training side (loss axes, augmentation policy, targets) and the
    model's fidelity into the saved config and the checkpoint."""
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"max_epochs": 1})
    cfg.write_text(cfg.read_text() + "fidelity: authors\n")
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 0, result.stderr[-2000:]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["fidelity"], saved["train"]["loss_axis"], saved["augment"]["policy"], saved["data"]["targets"]) \
        == ("authors", [1, 2, 3], "authors", "authors")
    assert Checkpoints(tmp_path / "run").latest().model_args == {"fidelity": "authors"}


def test_two_horovod_ranks_stay_identical(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)})
    result = horovodrun(tmp_path / "logs", "train.py", "-c", cfg)
    assert_ranks_succeeded(result, tmp_path / "logs")
    assert "2 rank(s)" in result.stdout
    rows = history(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["rank_spread"] == 0.0 for r in rows)  # parameter checksums all-gathered every epoch


def test_a_global_batch_in_passes_on_two_ranks_trains_as_one_batch_on_one(tmp_path, scenes):
    """train.global_batch 4 (8 chips: 2 updates an epoch, no augmentation): 1 process with batch_size 4 (1 pass)
    and 2 ranks with batch_size 1 (2 passes each) say how the batch is made, record it, and end epoch 1 with
    the same parameters (within 1e-6 relative: float32 sums in another order) and validation loss."""
    train = {"global_batch": 4, "max_epochs": 1, "max_steps_per_epoch": None}
    runs = {}
    for ranks, batch_size in [(1, 4), (2, 1)]:
        folder = tmp_path / f"ranks{ranks}"
        cfg = write_config(folder, {"root": str(scenes)}, train={**train, "batch_size": batch_size},
                           augment={"enabled": False}, output={"run_dir": str(folder / "run")})
        if ranks == 1:
            result = run([sys.executable, "train.py", "-c", str(cfg)])
            assert result.returncode == 0, result.stderr[-2000:]
        else:
            result = horovodrun(folder / "logs", "train.py", "-c", cfg)
            assert_ranks_succeeded(result, folder / "logs")
        runs[ranks] = (result.stdout, history(folder / "run"),
                       mx.nd.load(str(folder / "run" / "checkpoints" / "epoch_0001.params")))
    (out1, [row1], params1), (out2, [row2], params2) = runs[1], runs[2]
    assert "global batch 4 = 1 rank x 1 pass x 4 chips" in out1
    assert "global batch 4 = 2 ranks x 2 passes x 1 chip" in out2
    assert (row1["updates"], row1["global_batch"], row1["batch_split"]) == (2, 4, "1 rank x 1 pass x 4 chips")
    assert (row2["updates"], row2["global_batch"], row2["batch_split"], row2["rank_spread"]) == (
        2, 4, "2 ranks x 2 passes x 1 chip", 0.0)
    first, second = (np.concatenate([p[k].asnumpy().ravel() for k in sorted(p)]).astype(np.float64)
                     for p in (params1, params2))
    assert np.linalg.norm(second - first) / np.linalg.norm(first) < 1e-6
    assert row2["val_loss"] == pytest.approx(row1["val_loss"], rel=1e-5)


def test_a_run_in_passes_resumes_as_it_would_have_gone_on(tmp_path, scenes):
    """Global batch 4 in 2 passes of 2: a run stopped after epoch 1 (its checkpoint falls between updates) and
    resumed for epoch 2 ends with the parameters of an uninterrupted 2-epoch run."""
    train = {"global_batch": 4, "batch_size": 2, "max_steps_per_epoch": None}
    reference = write_config(tmp_path / "reference", {"root": str(scenes)}, train={**train, "max_epochs": 2},
                             output={"run_dir": str(tmp_path / "ref")})
    assert run([sys.executable, "train.py", "-c", str(reference)]).returncode == 0
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={**train, "max_epochs": 1})
    assert run([sys.executable, "train.py", "-c", str(cfg)]).returncode == 0
    cfg.write_text(cfg.read_text().replace("max_epochs: 1", "max_epochs: 2"))
    result = run([sys.executable, "train.py", "-c", str(cfg), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [(r["epoch"], r["updates"], r["batch_split"]) for r in history(tmp_path / "run")] == [
        (1, 2, "1 rank x 2 passes x 2 chips"), (2, 2, "1 rank x 2 passes x 2 chips")]
    final, expected = (mx.nd.load(str(folder / "checkpoints" / "epoch_0002.params"))
                       for folder in (tmp_path / "run", tmp_path / "ref"))
    final, expected = (np.concatenate([p[k].asnumpy().ravel() for k in sorted(p)]).astype(np.float64)
                       for p in (final, expected))
    assert np.linalg.norm(final - expected) / np.linalg.norm(expected) < 1e-6


def test_a_global_batch_the_ranks_cannot_share_stops_before_any_chip(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"global_batch": 3})
    result = horovodrun(tmp_path / "logs", "train.py", "-c", cfg)
    assert result.returncode != 0
    expected = [f"error: config {cfg}: train.global_batch 3 cannot be shared by 2 ranks: every rank takes "
                "the same number of chips, so it must be a multiple of 2 (e.g. 2 or 4)"]
    said = []
    for rank in (0, 1):
        lines = [line.split("<stderr>:", 1)[1] for line in (tmp_path / "logs" / f"rank.{rank}" / "stderr").read_text()
                 .splitlines() if "<stderr>:" in line]  # horovodrun prefixes every line with [rank]<stderr>:
        # the first rank to exit makes horovodrun SIGTERM the other: one that has written its line ignores it and
        # ends with its own status; one still starting is ended by it ("terminated", or its shell's "Terminated"
        # while Python itself is still loading)
        assert lines in (expected, [], ["terminated"], ["Terminated"]), every_rank(result, tmp_path / "logs")
        said.append(lines == expected)
    assert any(said), every_rank(result, tmp_path / "logs")
    assert not (tmp_path / "run" / "chips").exists()


def test_batchnorm_with_passes_is_warned_in_one_line(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, model={"args": {"norm": "BatchNorm"}},
                       train={"global_batch": 2, "batch_size": 1, "max_epochs": 1, "max_steps_per_epoch": 1})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in messages(result) if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: BatchNorm (") and warnings[0].endswith(
        "layers) normalises each pass of at most 1 chip on its own: the update is not that of one batch of 2 chips "
        "(it is with per-chip normalisation such as GroupNorm)")


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, scenes):
    data = {"root": str(scenes), "stride": 16}
    train = {"max_epochs": 4, "max_steps_per_epoch": 6}
    reference = write_config(tmp_path / "reference", data, train=train, output={"run_dir": str(tmp_path / "ref")})
    assert run([sys.executable, "train.py", "-c", str(reference)]).returncode == 0

    cfg = write_config(tmp_path, data, train=train)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "-c", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "latest.json").exists():  # written last: the checkpoint is complete
        assert proc.poll() is None and time.time() < deadline, "training ended or stalled before epoch 1"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = Checkpoints(run_dir).latest()
    assert 1 <= killed_at.epoch < 4

    result = run([sys.executable, "train.py", "-c", str(cfg), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from epoch {killed_at.epoch}" in result.stdout
    rows = history(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    ref_rows = history(tmp_path / "ref")
    for mine, ref in zip(rows, ref_rows):  # same lr and depth at every epoch, same losses
        assert (mine["lr"], mine["depth"]) == (ref["lr"], ref["depth"])
        assert mine["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-4)
    # MXNet's CPU kernels are not bitwise deterministic (two uninterrupted runs differ by ~1e-5 here)
    final = mx.nd.load(str(run_dir / "checkpoints" / "epoch_0004.params"))
    expected = mx.nd.load(str(tmp_path / "ref" / "checkpoints" / "epoch_0004.params"))
    assert max(float(np.abs(final[k].asnumpy() - expected[k].asnumpy()).max()) for k in final) < 1e-3


def test_unknown_config_key_is_one_line(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"batchsize": 4})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 2
    known = ", ".join(sorted(f.name for f in dataclasses.fields(TrainConfig)))
    assert result.stderr.strip().splitlines() == [
        f"error: config {cfg}: unknown key 'train.batchsize' (known: {known})"]
    assert "batch_size, depths" in known  # the list is the schema's, sorted


def test_mismatched_dates_stop_with_the_file_names(tmp_path):
    """The real LEVIR-CD pair whose dates differ in size (../shared/data/bad_inputs)."""
    bad = SHARED / "bad_inputs" / "mismatched_size"
    if not bad.exists():
        pytest.skip(f"real bad input not present at {bad}")
    root = tmp_path / "levir"
    for split in ("train", "val"):
        for folder in ("A", "B", "label"):
            (root / split / folder).mkdir(parents=True)
        for folder in ("A", "B"):
            (root / split / folder / "pair.png").write_bytes((bad / f"{folder}.png").read_bytes())
        label = np.zeros((384, 768), np.uint8)
        cv2.imwrite(str(root / split / "label" / "pair.png"), label)
    cfg = write_config(tmp_path, {"root": str(root)})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: date images differ in size:")
    assert "A/pair.png is 384x768 (rows x cols)" in lines[0] and "B/pair.png is 383x768" in lines[0]


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = write_config(tmp_path, {"root": str(tmp_path / "empty")})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "empty" in result.stderr


@pytest.mark.slow
def test_tiny_model_overfits_the_real_levir_samples(tmp_path):
    """Eight real LEVIR-CD crops: a tiny FracTAL ResNet learns them (training F1 well above the all-change
    predictor's F1 = 2p / (1 + p), p the change fraction)."""
    samples = SHARED / "levircd_samples"
    if not samples.exists():
        pytest.skip(f"real LEVIR-CD samples not present at {samples}")
    cfg = write_config(tmp_path, {"root": str(samples), "train_split": None, "val_split": None, "chip_size": 128,
                                  "stride": 128},
                       model={"name": "fractalresnet_tiny"}, augment={"enabled": False},
                       train={"batch_size": 8, "lr": 3e-3, "depths": [0], "patience": 1000, "max_epochs": 20,
                              "max_steps_per_epoch": None})
    result = run([sys.executable, "train.py", "-c", str(cfg)], timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = history(tmp_path / "run")
    last = rows[-1]
    labels = sorted((samples / "label").glob("*.png"))
    p = float(np.mean([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0 for f in labels]))
    trivial_f1 = 2 * p / (1 + p)
    print(f"change fraction {p:.4f}, all-change F1 {trivial_f1:.4f}, final F1 {last['val_f1']:.4f} "
          f"MCC {last['val_mcc']:.4f} IoU {last['val_iou']:.4f} after {len(rows)} epochs")
    assert last["val_f1"] > trivial_f1 + 0.3


@pytest.fixture(scope="module")
def gappy_pair(tmp_path_factory):
    """A float32 GeoTIFF pair with NaN, +-inf and nodata gaps (tests/utilities/fakes.py): 14 of its 25
    chips of 32 x 32 at stride 16 hold data everywhere."""
    from tests.utilities.fakes import write_pair_with_gaps

    d1, d2, label = write_pair_with_gaps(tmp_path_factory.mktemp("gaps"))
    return {"kind": "pair", "date1": str(d1), "date2": str(d2), "label": str(label), "val_date1": str(d1),
            "val_date2": str(d2), "val_label": str(label), "stride": 16}


def test_nan_inf_and_nodata_chips_are_skipped_and_training_stays_finite(tmp_path, gappy_pair):
    cfg = write_config(tmp_path, gappy_pair, train={"max_epochs": 2})
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 0, result.stderr[-2000:]
    counts = [line for line in result.stdout.splitlines() if line.startswith("chips:")]
    assert counts == ["chips: 14 training, 14 validation (11 and 11 skipped for NaN, infinite or nodata pixels)"]
    for split in ("train", "val"):
        for date in ("date1", "date2"):
            assert np.isfinite(np.load(tmp_path / "run" / "chips" / split / f"{date}.npy")).all()
    for row in history(tmp_path / "run"):
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    params = mx.nd.load(str(tmp_path / "run" / "checkpoints" / "epoch_0002.params"))
    assert all(np.isfinite(p.asnumpy()).all() for p in params.values())


#: runs train.main in one process with a patch applied first (a script: Horovod stays out of pytest's process)
PATCHED_RUN = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
import train
from utilities.cli import entry_point
from utilities.training.distributed import shutdown
{patch}
try:
    code = entry_point(train.main, train.FAILURES)(["-c", {config!r}])
finally:
    shutdown()
sys.exit(code)
"""

#: NaN in one array of one training chip (0: date 1, 2: change target), injected after the chip cache was built
POISON_CHIP = """
from utilities.training import pipeline
class Poisoned(pipeline.ChipDataset):
    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.cache_dir.name == "train" and index == {index}:
            item[{array}][:] = np.nan
        return item
pipeline.ChipDataset = Poisoned
"""

#: NaN gradients (after the all-reduce) in the first step of epoch 2; inputs and losses stay finite
POISON_GRADIENTS = """
allreduce_grads = train.hvd.DistributedTrainer._allreduce_grads
calls = []
def poisoned(self):
    allreduce_grads(self)
    calls.append(1)
    if len(calls) == 3:  # 2 steps per epoch
        self._params[0].list_grad()[0][:] = np.nan
train.hvd.DistributedTrainer._allreduce_grads = poisoned
"""

#: one parameter turned NaN after the first epoch's training steps (whose losses stay finite)
POISON_PARAMETERS = """
train_epoch = train.train_epoch
def poisoned(net, *args, **kwargs):
    loss = train_epoch(net, *args, **kwargs)
    param = list(net.collect_params().values())[5]
    param.set_data(param.data() * np.nan)
    return loss
train.train_epoch = poisoned
"""


def messages(result) -> list:
    """The stderr lines of a run apart from the chipping progress (which writes to stderr)."""
    return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("chipping into")]


def run_patched(tmp_path: Path, config: Path, patch: str):
    script = tmp_path / "patched_train.py"
    script.write_text(PATCHED_RUN.format(root=str(ROOT), config=str(config), patch=patch))
    return run([sys.executable, str(script)])


def assert_only_epoch_1_is_saved(run_dir: Path) -> None:
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("epoch_*")) == [f"epoch_0001.{s}" for s in ("json", "params",
                                                                                               "stac.json", "states")]
    assert Checkpoints(run_dir).latest().epoch == 1
    params = mx.nd.load(str(checkpoints / "epoch_0001.params"))
    assert all(np.isfinite(p.asnumpy()).all() for p in params.values())


@pytest.mark.parametrize("schedule, array, what", [({"milestones": [2]}, 2, "loss"), ({"patience": 1}, 2, "loss"),
                                                   ({"milestones": [2]}, 0, "input")],
                         ids=["loss-milestones", "loss-plateau", "input"])
def test_non_finite_loss_stops_at_once_without_a_checkpoint(tmp_path, gappy_pair, schedule, array, what):
    """A chip turned NaN after the cache (its target: a NaN loss; its date: a NaN input): the run stops
    in the step that sees it, exit 1, one line naming the epoch, the step and the chip; epoch 1 (before)
    keeps its checkpoint, no later one is written."""
    from utilities.data.chips import ChipDataset
    from utilities.training.accumulate import GlobalBatch, GlobalBatchSampler
    from utilities.training.distributed import World

    cfg = write_config(tmp_path, gappy_pair, train={"max_epochs": 3, **schedule})
    sampler = GlobalBatchSampler(14, World(0, 1, 0), GlobalBatch(2, 1, (2,)), seed=0)
    seen = {}
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        seen[epoch] = [chip for chips in list(sampler)[:2] for chip in chips]  # 2 steps of 2 chips
    position = next(i for i in range(0, 4, 2) if seen[2][i] not in seen[1])  # first of its batch, unseen in epoch 1
    chip = seen[2][position]
    result = run_patched(tmp_path, cfg, POISON_CHIP.format(index=chip, array=array))
    assert result.returncode == 1, result.stderr[-3000:]
    where = ChipDataset(tmp_path / "run" / "chips" / "train").describe(chip)
    assert messages(result) == [
        f"error: non-finite {what} at epoch 2, step {position // 2 + 1}, first in {where}: training stopped"]
    assert_only_epoch_1_is_saved(tmp_path / "run")


def test_non_finite_gradients_stop_at_once(tmp_path, gappy_pair):
    cfg = write_config(tmp_path, gappy_pair, train={"milestones": [2]})
    result = run_patched(tmp_path, cfg, POISON_GRADIENTS)
    assert result.returncode == 1, result.stderr[-3000:]
    assert messages(result) == [
        "error: non-finite gradients at epoch 2, step 1 (finite inputs and loss): training stopped"]
    assert_only_epoch_1_is_saved(tmp_path / "run")


def test_non_finite_parameters_are_never_checkpointed(tmp_path, gappy_pair):
    cfg = write_config(tmp_path, gappy_pair, train={"milestones": [2]})
    result = run_patched(tmp_path, cfg, POISON_PARAMETERS)
    assert result.returncode == 1, result.stderr[-3000:]
    from mantis import get_model

    names = list(get_model("fractalresnet_tiny").collect_params())
    [line] = messages(result)
    assert re.fullmatch(rf"error: after epoch 1, 1 of {len(names)} parameter arrays are not finite \(first \w+"
                        rf"{names[5].split('_', 1)[1]}\): training stopped, no checkpoint written for epoch 1", line)
    assert not list((tmp_path / "run" / "checkpoints").glob("*"))


def test_resume_without_checkpoints_warns_and_starts_afresh(tmp_path, scenes):
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"max_epochs": 1})
    result = run([sys.executable, "train.py", "-c", str(cfg), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert messages(result) == [
        f"warning: no checkpoint in {tmp_path / 'run' / 'checkpoints'}: starting afresh"]
    assert [r["epoch"] for r in history(tmp_path / "run")] == [1]


@pytest.mark.parametrize("section, values, message", [
    ("train", {"batch_size": "three"}, "train.batch_size must be an integer, got 'three'"),
    ("train", {"lr": -1}, "train.lr must be > 0, got -1.0"),
    ("train", {"depths": "0,10"}, "train.depths must be a list of integers, got '0,10'"),
    ("data", {"chip_size": 60, "stride": 30},
     "data.chip_size 60 is not a multiple of 8, which fractalresnet_tiny needs (use 56 or 64)"),
    ("model", {"args": {"nfilter": 8}}, "unknown key 'model.args.nfilter' for fractalresnet_tiny (known: "),
    ("output", {"run_dir": "{file}/run"}, "output.run_dir {file}/run lies under {file}, which is a file"),
], ids=["type", "range", "list", "chip-size", "model-args", "run-dir"])
def test_bad_config_values_stop_before_any_chip(tmp_path, scenes, section, values, message):
    """Every kind of config check through train.py (each message in tests/utilities/training/test_config.py)."""
    (tmp_path / "afile").write_text("")
    values = {k: v.format(file=tmp_path / "afile") if isinstance(v, str) else v for k, v in values.items()}
    data = {"root": str(scenes), **(values if section == "data" else {})}
    cfg = write_config(tmp_path, data, **({} if section == "data" else {section: values}))
    result = run([sys.executable, "train.py", "-c", str(cfg)])
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: config {cfg}: " + message.format(file=tmp_path / "afile"))
    assert not (tmp_path / "run").exists()


#: train.py as horovodrun starts it, except that one rank's main thread blocks for good before epoch 2 (it
#: opens a FIFO nobody writes to) while its Horovod threads stay alive
STALLED_RANK = """
import runpy, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import nn  # noqa: F401  (threads first, as train.py)
import horovod.mxnet as hvd
from utilities.training import accumulate

set_epoch = accumulate.GlobalBatchSampler.set_epoch


def blocked_before_epoch_2(self, epoch):
    if epoch == 2 and hvd.rank() == {rank}:
        Path({fifo!r} + ".since").write_text(repr(time.time()))
        open({fifo!r}).read()
    set_epoch(self, epoch)


accumulate.GlobalBatchSampler.set_epoch = blocked_before_epoch_2
sys.argv = ["train.py", "-c", {config!r}]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_stalled_rank_ends_the_job_and_the_run_resumes(tmp_path, scenes):
    """Rank 1's main thread blocks before epoch 2: its watchdog ends the job within stall_timeout_s + 30 s
    with one line naming rank 1 and its last completed step (rank 0, waiting inside MXNet for rank 1's
    gradients, does not report itself); the run then resumes from the epoch 1 checkpoint on 2 ranks."""
    timeout = 30
    cfg = write_config(tmp_path, {"root": str(scenes)}, train={"stall_timeout_s": timeout})
    fifo = tmp_path / "never_written"
    os.mkfifo(fifo)
    script = tmp_path / "stalled_rank.py"
    script.write_text(STALLED_RANK.format(root=str(ROOT), rank=1, fifo=str(fifo), config=str(cfg)))
    result = horovodrun(tmp_path / "logs", script, "-c", cfg)
    ended = time.time()
    report = every_rank(result, tmp_path / "logs")
    assert result.returncode != 0, report
    assert ended - float(Path(f"{fifo}.since").read_text()) < timeout + 30, report
    stalled = [line.split("<stderr>:", 1)[1] for line in (tmp_path / "logs" / "rank.1" / "stderr").read_text()
               .splitlines() if "stalled" in line]  # horovodrun prefixes every line with [rank]<stderr>:
    assert len(stalled) == 1, report
    assert stalled[0].startswith("error: rank 1 stalled: no training step or validation batch completed in "), report
    assert (f"(train.stall_timeout_s {timeout}); last completed: epoch 1, validation step 1; main thread in "
            "blocked_before_epoch_2 (stalled_rank.py:") in stalled[0], report
    assert "rank 0 stalled" not in (tmp_path / "logs" / "rank.0" / "stderr").read_text(), report
    assert Checkpoints(tmp_path / "run").latest().epoch == 1

    resumed = horovodrun(tmp_path / "logs_resumed", "train.py", "-c", cfg, "--resume")
    assert_ranks_succeeded(resumed, tmp_path / "logs_resumed")
    assert "resumed from epoch 1" in resumed.stdout
    rows = history(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["rank_spread"] == 0.0 for r in rows)
