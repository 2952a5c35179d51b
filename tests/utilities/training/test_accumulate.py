"""utilities.training.accumulate: how the ranks share a global batch, which chips make each update, and the
exactness of summing pass gradients (against NumPy, and one global batch made four ways on a tiny mantis model,
1 and 2 Horovod ranks, float32 and float64; D6nf32 FracTAL ResNet, slow)."""
import os
import subprocess
import sys
from pathlib import Path

from nn import GroupNorm
from nn.norm import groupnorm_form

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from utilities.errors import InputError
from utilities.training.accumulate import (
    GlobalBatch,
    GlobalBatchSampler,
    GradientSum,
    batch_statistics_warning,
    check_resumed_batch,
    plan_global_batch,
)
from utilities.training.config import TrainConfig, load_config
from utilities.training.distributed import World
from utilities.training.step import forward_backward, update

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("accumulation_worker.py")
HOROVODRUN = Path(sys.executable).parent / "horovodrun"


def plan(global_batch, batch_size, ranks):
    return plan_global_batch(TrainConfig(batch_size=batch_size, global_batch=global_batch), ranks, "c.yaml")


@pytest.mark.parametrize("global_batch, batch_size, ranks, passes, words", [
    (None, 3, 2, (3,), "global batch 6 = 2 ranks x 1 pass x 3 chips"),
    (192, 3, 2, (3,) * 32, "global batch 192 = 2 ranks x 32 passes x 3 chips"),
    (192, 3, 64, (3,), "global batch 192 = 64 ranks x 1 pass x 3 chips"),
    (192, 4, 1, (4,) * 48, "global batch 192 = 1 rank x 48 passes x 4 chips"),
    (192, 3, 3, (3,) * 20 + (2,) * 2, "global batch 192 = 3 ranks x (20 passes x 3 chips + 2 passes x 2 chips)"),
    (8, 3, 4, (2,), "global batch 8 = 4 ranks x 1 pass x 2 chips"),
    (5, 2, 1, (2, 2, 1), "global batch 5 = 1 rank x (2 passes x 2 chips + 1 pass x 1 chip)"),
])
def test_each_rank_takes_an_equal_share_in_passes_of_at_most_batch_size(global_batch, batch_size, ranks, passes,
                                                                        words):
    made = plan(global_batch, batch_size, ranks)
    assert made == GlobalBatch(made.size, ranks, passes) and made.describe() == words
    assert made.share * ranks == made.size and max(made.passes) <= batch_size


@pytest.mark.parametrize("global_batch, ranks, use", [(190, 4, "188 or 192"), (3, 4, "4")])
def test_a_global_batch_the_ranks_cannot_share_is_refused_in_one_line(global_batch, ranks, use):
    with pytest.raises(InputError) as err:
        plan(global_batch, 3, ranks)
    assert str(err.value) == (f"config c.yaml: train.global_batch {global_batch} cannot be shared by {ranks} ranks: "
                              f"every rank takes the same number of chips, so it must be a multiple of {ranks} "
                              f"(e.g. {use})")


def test_the_paper_presets_update_on_192_chips_and_bad_values_are_named(tmp_path):
    """192 = 3 chips per GPU x 16 nodes x 4 GPUs (Section 8.3, Appendix D), in every D6nf32 preset of the paper's
    data sets (LEVIR-CD, WHU; the OSCD presets are not the paper's experiments)."""
    presets = sorted(p for kind in ("levircd", "whu") for p in (ROOT / "configs").glob(f"{kind}_*_d6nf32*.yaml"))
    assert len(presets) == 12 and {load_config(p).train.global_batch for p in presets} == {192}
    assert plan_global_batch(load_config(presets[0]).train, 64, "preset").describe() == (
        "global batch 192 = 64 ranks x 1 pass x 3 chips")
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  global_batch: 0\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value) == f"config {path}: train.global_batch must be >= 1, got 0"


def updates_of(length, global_batch, batch_size, ranks, epoch, seed=5):
    """Per update, the chips of every rank's passes (``[update][rank] -> list of passes``)."""
    made = plan(global_batch, batch_size, ranks)
    per_rank = []
    for rank in range(ranks):
        sampler = GlobalBatchSampler(length, World(rank, ranks, rank), made, seed=seed)
        sampler.set_epoch(epoch)
        assert len(sampler) == sampler.updates * len(made.passes)
        passes = list(sampler)
        assert [len(p) for p in passes] == list(made.passes) * sampler.updates
        per_rank.append([passes[u * len(made.passes):(u + 1) * len(made.passes)] for u in range(sampler.updates)])
    return [[per_rank[rank][u] for rank in range(ranks)] for u in range(len(per_rank[0]))]


def test_every_update_takes_the_same_chips_whatever_the_ranks_and_passes():
    """23 chips, global batch 6: 3 updates per epoch of 6 distinct chips each, the same chips (the epoch's
    shuffled order cut into global batches) for 1, 2 or 3 ranks and any passes; 5 chips sit the epoch out."""
    expected = None
    for ranks, batch_size in [(1, 6), (1, 1), (1, 4), (2, 3), (2, 1), (3, 2), (3, 1), (6, 1)]:
        updates = updates_of(23, 6, batch_size, ranks, epoch=2)
        chips = [sorted(c for rank in u for p in rank for c in p) for u in updates]
        assert len(chips) == 3 and all(len(set(c)) == 6 for c in chips)
        assert len(set(np.concatenate(chips))) == 18  # no chip twice in an epoch
        expected = expected or chips
        assert chips == expected, (ranks, batch_size)
    order = np.random.default_rng((5, 2)).permutation(23)
    assert expected == [sorted(order[u * 6:(u + 1) * 6]) for u in range(3)]


def test_the_order_changes_with_the_epoch_and_repeats_with_it():
    assert updates_of(23, 6, 3, 2, epoch=1) == updates_of(23, 6, 3, 2, epoch=1)
    assert updates_of(23, 6, 3, 2, epoch=1) != updates_of(23, 6, 3, 2, epoch=2)


def test_fewer_chips_than_one_global_batch_is_refused():
    with pytest.raises(InputError) as err:
        GlobalBatchSampler(150, World(0, 2, 0), plan(192, 3, 2))
    assert str(err.value) == "train.global_batch 192 is more than the 150 training chips: an epoch would make no update"


def linear(weight):
    net = gluon.nn.Dense(weight.shape[0], in_units=weight.shape[1], use_bias=False, dtype="float64")
    net.initialize()
    net.weight.set_data(nd.array(weight, dtype="float64"))
    return net


def squared_error(out, y):
    """Per-sample 0.5 * sum of squares."""
    return 0.5 * ((out - y) ** 2).sum(axis=1)


@pytest.mark.parametrize("passes", [(6,), (2, 2, 2), (3, 2, 1), (1,) * 6])
def test_summed_passes_give_the_gradient_and_sgd_update_of_the_whole_batch(passes):
    """Two global batches of 6 (float64): after each, the gradient is sum_i (W x_i - y_i) x_i^T over its 6 samples
    and W' = W - lr / 6 times it (NumPy; to MXNet's float32 precision of lr / 6), however the batch is cut into
    passes; the second global batch's gradient holds nothing of the first's."""
    rng = np.random.RandomState(0)
    w, x, y = rng.normal(size=(2, 3)), rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    net = linear(w)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    gradients = GradientSum(net)
    for batch in (slice(0, 6), slice(6, 12)):
        xb, yb = x[batch], y[batch]
        bounds = np.cumsum((0,) + passes)
        for i, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            forward_backward(net, squared_error, [nd.array(xb[begin:end], dtype="float64")],
                             [nd.array(yb[begin:end], dtype="float64")])
            gradients.add_pass(last=i == len(passes) - 1)
        grad = (xb @ w.T - yb).T @ xb
        np.testing.assert_allclose(net.weight.grad().asnumpy(), grad, rtol=1e-13, atol=1e-13)
        update(net, trainer, 6)
        w = w - 0.1 * grad / 6
        # MXNet hands the learning rate and 1 / 6 to its update operator as float32 numbers: 1e-7 relative
        np.testing.assert_allclose(net.weight.data().asnumpy(), w, rtol=0, atol=1e-7 * np.abs(0.1 * grad / 6).max())
        w = net.weight.data().asnumpy()


class Normed(gluon.nn.HybridBlock):
    """Conv -> norm -> mean over pixels and channels (one value per sample)."""

    def __init__(self, norm):
        super().__init__()
        with self.name_scope():
            self.conv = gluon.nn.Conv2D(4, 3, padding=1, in_channels=2)
            self.norm = norm

    def hybrid_forward(self, F, x):
        return F.mean(F.relu(self.norm(self.conv(x))), axis=(1, 2, 3))


def gradient(net, x, passes):
    """The conv weight's gradient of the loss summed over ``x``, run in ``passes`` (sizes)."""
    gradients = GradientSum(net)
    bounds = np.cumsum((0,) + passes)
    for i, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        with autograd.record():
            loss = net(x[begin:end])
        loss.backward()
        gradients.add_pass(last=i == len(passes) - 1)
    return net.conv.weight.grad().asnumpy().astype(np.float64)


@pytest.mark.parametrize("norm, exact", [(lambda: GroupNorm(4, num_groups=2), True),
                                         (lambda: gluon.nn.BatchNorm(in_channels=4), False)],
                         ids=["GroupNorm", "BatchNorm"])
def test_batchnorm_makes_accumulation_inexact_and_is_warned_about(norm, exact):
    """GroupNorm: a batch of 4 in passes of 2 has the gradient of one pass of 4 (float64, 1e-12); BatchNorm
    normalises each pass over its own chips, so the gradients differ, and the run is warned in one line."""
    net = Normed(norm())
    net.initialize(mx.init.Xavier())
    net.cast("float64")
    x = nd.array(np.random.RandomState(3).normal(size=(4, 2, 6, 6)), dtype="float64")
    with groupnorm_form("operator"):  # float64 (the fused kernel computes in float32)
        whole, halves = gradient(net, x, (4,)), gradient(net, x, (2, 2))
    assert (np.linalg.norm(halves - whole) / np.linalg.norm(whole) < 1e-12) == exact
    warning = batch_statistics_warning(net, plan(4, 2, 1))
    if exact:
        assert warning is None
    else:
        assert warning == ("warning: BatchNorm (1 layer) normalises each pass of at most 2 chips on its own: the "
                           "update is not that of one batch of 4 chips (it is with per-chip normalisation such as "
                           "GroupNorm)")
        assert batch_statistics_warning(net, plan(None, 4, 1)) is None  # one pass of the whole batch: exact


def worker(out: Path, *args: str, ranks: int = 1, timeout: int = 600) -> np.lib.npyio.NpzFile:
    command = [sys.executable, str(WORKER), str(out), *args]
    if ranks > 1:
        command = [str(HOROVODRUN), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *command]
    env = dict(os.environ, OMP_NUM_THREADS="1", MANTIS_THREADS="1")  # one thread: MXNet's CPU kernels repeat exactly
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return np.load(out)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| over the whole parameter vector."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


#: the largest relative difference of the parameter vectors per dtype
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}


def test_one_global_batch_made_four_ways_gives_the_same_parameters(tmp_path):
    """fractalresnet_tiny (GroupNorm: mantis's fused kernel in float32, MXNet's operator in float64), Adam, 3 updates
    of a global batch of 4 chips (32x32): (a) 1 rank, 1 pass of 4; (b) 1 rank, 4 passes of 1; (c) 2 ranks, 2 passes
    of 1; (d) 2 ranks, 1 pass of 2. The parameter vectors agree within 1e-6 relative in float32 and 1e-12 in float64
    (measured 3.5e-7 and 1.4e-15), while the updates moved them by about 1e-2 relative. The float32 differences are
    rounding (sums in another order) that Adam enlarges where a gradient is about 0 (its step is then ~ g / |g|)."""
    one = worker(tmp_path / "one.npz", "--batch-sizes", "4", "1")
    two = worker(tmp_path / "two.npz", "--batch-sizes", "1", "2", ranks=2)
    assert [str(one["float32/1/plan"]), str(two["float32/1/plan"]), str(two["float32/2/plan"])] == [
        "global batch 4 = 1 rank x 4 passes x 1 chip", "global batch 4 = 2 ranks x 2 passes x 1 chip",
        "global batch 4 = 2 ranks x 1 pass x 2 chips"]
    for dtype, tolerance in TOLERANCE.items():
        reference, initial = one[f"{dtype}/4"], one[f"{dtype}/initial"]
        np.testing.assert_array_equal(two[f"{dtype}/initial"], initial)
        assert relative(initial, reference) > 1e-3  # the updates did move the parameters
        for made in (one[f"{dtype}/1"], two[f"{dtype}/1"], two[f"{dtype}/2"]):
            assert relative(made, reference) < tolerance, dtype


@pytest.mark.slow
def test_d6nf32_fractal_resnet_one_update_of_two_chips_in_one_or_two_passes(tmp_path):
    """The paper's FracTAL ResNet D6nf32, two 256x256 chips, one Adam update (float32, fused kernels): one pass of
    2 and two passes of 1 give the same parameters within 1e-6 relative."""
    result = worker(tmp_path / "d6.npz", "--batch-sizes", "2", "1", "--dtypes", "float32", "--model",
                    "fractalresnet_d6nf32", "--size", "256", "--global-batch", "2", "--updates", "1", timeout=1800)
    assert relative(result["float32/initial"], result["float32/2"]) > 1e-4
    assert relative(result["float32/1"], result["float32/2"]) < TOLERANCE["float32"]


def test_resuming_on_another_number_of_ranks_without_a_global_batch_is_refused():
    """global_batch unset: batch_size x ranks, so 2 ranks resuming a 1-rank run would double the update."""
    train = TrainConfig(batch_size=4)
    before = plan_global_batch(train, 1, "c.yaml")
    metrics = {"global_batch": before.size, "batch_split": before.split}
    check_resumed_batch(before, metrics, "c.yaml")  # the same ranks: resumed
    check_resumed_batch(plan_global_batch(train, 2, "c.yaml"), None, "c.yaml")  # a record without metrics
    check_resumed_batch(plan_global_batch(train, 2, "c.yaml"), {"epoch": 1}, "c.yaml")  # written before the key
    with pytest.raises(InputError) as err:
        check_resumed_batch(plan_global_batch(train, 2, "c.yaml"), metrics, "c.yaml")
    assert str(err.value) == ("config c.yaml: resuming with a global batch of 8 (2 ranks x 1 pass x 4 chips) instead "
                              "of the checkpoint's 4 (1 rank x 1 pass x 4 chips): set train.global_batch: 4 to resume "
                              "it with the same updates")
    fixed = TrainConfig(batch_size=4, global_batch=4)  # the fix the message names: 2 ranks x 1 pass x 2 chips
    check_resumed_batch(plan_global_batch(fixed, 2, "c.yaml"), metrics, "c.yaml")
