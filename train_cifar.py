"""Train a CIFAR-10 classifier of Table A.3 (paper Section 7): the building-block comparison (Fig. 8)
and the evolving-loss experiment (Section 7.2, Fig. 11).

    python train_cifar.py -c configs/cifar10_table_a3.yaml
    horovodrun -np 4 -H localhost:4 python train_cifar.py -c configs/cifar10_evolving_loss.yaml
    python train_cifar.py -c my.yaml --fake        # small fake CIFAR-10 written to out_dir (smoke test)

One flat script: read the config, load the data, build the model, train with Adam under Horovod
(one process per device; ``batch_size`` is per process), and follow the evolving-loss schedule
(:mod:`utilities.schedule`): each epoch sets the learning rate and the depth ``d`` of the loss
``1 - <FT>^d`` (computed on softmax outputs against one-hot labels, over the class axis). Rank 0
writes ``config.yaml`` (the resolved config), ``history.json`` (one entry per epoch) and, at the end,
``model.params`` to ``out_dir``.
"""
import nn  # noqa: F401, I001  (first: sets MXNet's OpenMP threads before MXNet loads)

import argparse
import json
import math
import os
import sys

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
import yaml
from mxnet import autograd, gluon

from mantis import get_model
from utilities.atomic import atomic_path, atomic_write_text
from utilities.cifar10 import load_cifar10, write_fake_cifar10
from utilities.progress import progress
from utilities.schedule import EvolvingLossSchedule

# ----------------------------------------------------------------------------- config
DEFAULTS = {
    "model": "cifar_fractalresnet",  # a registered model (mantis.cifar), e.g. cifar_resnet, cifar_ceecnetv2
    "model_kwargs": {},              # overrides of the model's arguments, e.g. {norm: GroupNorm}
    "data_dir": "data/cifar10",      # CIFAR-10 python version (or its parent folder)
    "batch_size": 64,                # per process (Horovod rank)
    "epochs": 300,
    "lr": 1e-3,                      # learning rate of the first stage; divided by schedule.factor per stage
    "optimizer": "adam",
    "betas": [0.9, 0.999],           # Adam (beta1, beta2), Appendix D
    "loss": "ce",                    # 'ce' (softmax cross entropy) or 'ft' (1 - <FT>^d on softmax, Section 4)
    "augment": True,                 # random horizontal flip + 4-pixel pad-and-crop
    "schedule": {
        "depths": [0],               # FT depth of each stage
        "factor": 10.0,              # learning-rate divisor between stages
        "patience": 3,               # plateau mode: epochs without val-loss improvement before the next stage
        "milestones": None,          # fixed mode: epochs after which the next stage begins ([] = never)
    },
    "out_dir": "runs/cifar10",
    "seed": 0,
    "max_steps_per_epoch": None,     # cap on training (and validation) steps per epoch, for quick runs
}
FAKE_PER_BATCH = 64  # images per fake batch file with --fake (5 x 64 training, 64 test)


class ConfigError(ValueError):
    """A bad config file (reported as one line, like the other setup errors)."""


def load_config(path):
    """The config of ``path`` over :data:`DEFAULTS`; unknown keys and inconsistent choices are errors."""
    with open(path) as f:
        user = yaml.safe_load(f) or {}
    if not isinstance(user, dict) or not isinstance(user.get("schedule", {}), dict):
        raise ConfigError(f"{path}: the config and its 'schedule' must be mappings of keys to values")
    unknown = [k for k in user if k not in DEFAULTS]
    unknown += [f"schedule.{k}" for k in user.get("schedule", {}) if k not in DEFAULTS["schedule"]]
    if unknown:
        raise ConfigError(f"{path}: unknown config key '{unknown[0]}' (known: {', '.join(DEFAULTS)})")
    config = {**DEFAULTS, **user, "schedule": {**DEFAULTS["schedule"], **user.get("schedule", {})}}
    if config["loss"] not in LOSSES:
        raise ConfigError(f"{path}: loss must be one of {sorted(LOSSES)}, got {config['loss']!r}")
    if config["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"{path}: optimizer must be one of {sorted(OPTIMIZERS)}, got {config['optimizer']!r}")
    if config["loss"] == "ce" and any(config["schedule"]["depths"]):
        raise ConfigError(f"{path}: schedule.depths > 0 need loss 'ft' (cross entropy has no depth)")
    return config


def fail(message):
    sys.exit(f"train_cifar.py: error: {' '.join(str(message).split())}")


# ----------------------------------------------------------------------------- losses, optimizers
ft_loss = nn.FTnmtLoss(depth=0, axis=(1,))  # its .depth follows the schedule
LOSSES = {
    "ce": gluon.loss.SoftmaxCrossEntropyLoss(),
    "ft": lambda out, y: ft_loss(mx.nd.softmax(out, axis=1), mx.nd.one_hot(y, out.shape[1])),
}
OPTIMIZERS = {"adam": lambda cfg: ("adam", {"beta1": cfg["betas"][0], "beta2": cfg["betas"][1]})}


# ----------------------------------------------------------------------------- data
def to_tensor(images, ctx):
    """uint8 NHWC -> float32 NCHW in [0, 1] on ``ctx``."""
    return mx.nd.array(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, ctx=ctx)


def augment(images, rng):
    """The standard CIFAR augmentation (He et al. 2016): random horizontal flip, then a random
    32 x 32 crop of the image zero-padded by 4 pixels (uint8 NHWC in and out)."""
    n, h, w, _ = images.shape
    flip = rng.rand(n) < 0.5
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.randint(0, 9, size=(2, n))
    return np.stack([padded[i, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])


def epoch_batches(n, batch_size, epoch, seed, max_steps):
    """This rank's training batches: a permutation shared by all ranks (seeded by epoch), wrapped so
    that every rank takes the same number of full steps (a rank leaving early ends a Horovod job)."""
    order = np.random.RandomState([seed, epoch]).permutation(n)
    steps = math.ceil(n / (batch_size * hvd.size()))
    steps = min(steps, max_steps) if max_steps else steps
    order = np.resize(order, steps * batch_size * hvd.size())
    return order[hvd.rank()::hvd.size()].reshape(steps, batch_size)


def sync_running_stats(net):
    """Average the non-learned state (BatchNorm running mean and variance) over the ranks: Horovod
    averages gradients only, so each rank's statistics follow its own data shard."""
    for p in net.collect_params().values():
        if p.grad_req == "null":
            hvd.allreduce_(p.data(), average=True, name=p.name)


def evaluate(net, loss_fn, images, labels, batch_size, max_steps, ctx):
    """Mean loss and accuracy over all ranks (each rank takes every size-th image)."""
    mine = np.arange(hvd.rank(), len(images), hvd.size())
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)][:max_steps]
    totals = np.zeros(3)  # loss sum, correct, count
    for idx in progress(batches, desc="validation", disable=hvd.rank() != 0, leave=False, file=sys.stdout):
        out = net(to_tensor(images[idx], ctx))
        y = mx.nd.array(labels[idx], ctx=ctx)
        totals += [loss_fn(out, y).sum().asscalar(), (out.argmax(axis=1) == y).sum().asscalar(), len(idx)]
    # float64: float32 counts lose precision above 2^24
    loss_sum, correct, count = hvd.allreduce(mx.nd.array(totals, dtype="float64"), average=False,
                                             name="val_totals").asnumpy()
    return loss_sum / count, correct / count


# ----------------------------------------------------------------------------- setup
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("-c", "--config", required=True, help="YAML config (keys: see DEFAULTS in this file)")
parser.add_argument("--fake", action="store_true", help="write and train on a small fake CIFAR-10 in out_dir")
args = parser.parse_args()

try:
    cfg = load_config(args.config)
    if args.fake:
        cfg["data_dir"] = str(write_fake_cifar10(os.path.join(cfg["out_dir"], "fake_cifar10"), FAKE_PER_BATCH,
                                                 cfg["seed"]))
    train_x, train_y = load_cifar10(cfg["data_dir"], "train", layout="NHWC")
    val_x, val_y = load_cifar10(cfg["data_dir"], "test", layout="NHWC")
    sched_cfg = cfg["schedule"]
    schedule = EvolvingLossSchedule.from_depths(cfg["lr"], sched_cfg["depths"], factor=sched_cfg["factor"],
                                                patience=sched_cfg["patience"], milestones=sched_cfg["milestones"])
    net = get_model(cfg["model"], **cfg["model_kwargs"])
except (OSError, yaml.YAMLError, ValueError, TypeError) as err:
    fail(err)

hvd.init()
size = hvd.size()
if "SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) != size:
    hvd.shutdown()
    fail(f"SLURM_NTASKS={os.environ['SLURM_NTASKS']} but Horovod runs {size} processes "
         "(launch with horovodrun -np $SLURM_NTASKS)")
rank0 = hvd.rank() == 0
ctx = mx.gpu(hvd.local_rank()) if mx.context.num_gpus() else mx.cpu()
mx.random.seed(cfg["seed"])
aug_rng = np.random.RandomState([cfg["seed"], hvd.rank()])
loss_fn = LOSSES[cfg["loss"]]

net.initialize(mx.init.Xavier(), ctx=ctx)
net.hybridize()
# Shape inference must run inside autograd.record() before the broadcast (a forward outside it
# breaks Horovod's next sync under MKLDNN, see DESIGN.md); rank 0's weights then reach every rank.
with autograd.record():
    net(to_tensor(train_x[:cfg["batch_size"]], ctx))
hvd.broadcast_parameters(net.collect_params(), root_rank=0)
opt_name, opt_params = OPTIMIZERS[cfg["optimizer"]](cfg)
trainer = hvd.DistributedTrainer(net.collect_params(), opt_name, {"learning_rate": schedule.lr, **opt_params})

out_dir = cfg["out_dir"]
if rank0:
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), yaml.safe_dump(cfg, sort_keys=False))
    print(f"{cfg['model']}: {len(train_x)} training / {len(val_x)} validation images, {size} process(es), "
          f"batch {cfg['batch_size']} per process, loss {cfg['loss']}")

# ----------------------------------------------------------------------------- training
history = []
for epoch in range(1, cfg["epochs"] + 1):
    trainer.set_learning_rate(schedule.lr)  # on every rank, or the ranks drift apart
    ft_loss.depth = schedule.depth
    totals = np.zeros(3)  # loss sum, correct, count
    batches = epoch_batches(len(train_x), cfg["batch_size"], epoch, cfg["seed"], cfg["max_steps_per_epoch"])
    for idx in progress(batches, desc=f"epoch {epoch} train", disable=not rank0, leave=False, file=sys.stdout):
        images = augment(train_x[idx], aug_rng) if cfg["augment"] else train_x[idx]
        x, y = to_tensor(images, ctx), mx.nd.array(train_y[idx], ctx=ctx)
        with autograd.record():
            out = net(x)
            loss = loss_fn(out, y)
        loss.backward()
        trainer.step(len(idx))
        totals += [loss.sum().asscalar(), (out.argmax(axis=1) == y).sum().asscalar(), len(idx)]
    train_loss, train_correct, train_count = hvd.allreduce(mx.nd.array(totals, dtype="float64"), average=False,
                                                           name="train_totals").asnumpy()
    sync_running_stats(net)
    val_loss, val_acc = evaluate(net, loss_fn, val_x, val_y, cfg["batch_size"], cfg["max_steps_per_epoch"], ctx)
    history.append({"epoch": epoch, "train_loss": train_loss / train_count,
                    "train_accuracy": train_correct / train_count, "val_loss": val_loss, "val_accuracy": val_acc,
                    "lr": schedule.lr, "depth": schedule.depth})
    if rank0:
        atomic_write_text(os.path.join(out_dir, "history.json"), json.dumps(history, indent=1))
        print(" ".join(f"{k} {v:.4g}" for k, v in history[-1].items()), flush=True)
    if schedule.step(val_loss) and rank0:
        print(f"next stage: lr {schedule.lr:.1e}, FT depth {schedule.depth}")
    if schedule.finished:
        if rank0:
            print("the last stage has plateaued: training finished")
        break

if rank0:
    with atomic_path(os.path.join(out_dir, "model.params")) as tmp:
        net.save_parameters(tmp)
mx.nd.waitall()
hvd.shutdown()
