"""``make demo`` / ``python -m demo``: the whole mantis workflow on data the project makes itself.

1. synthetic scenes (buildings appearing and vanishing, with nuisance illumination, season and
   mis-registration changes) in the LEVIR-CD layout for training, and one large georeferenced scene;
2. training with ``horovodrun -np 2 --gloo`` through the evolving-loss stages (a shortened schedule);
3. Pareto-front model selection over the checkpoints of the most evolved stage (paper Section 8.5.2);
4. tiled prediction of the large scene with the Pareto ensemble (averaged outputs), as Cloud-Optimized
   GeoTIFFs and change polygons;
5. evaluation of that prediction against the scene's label: metrics table, TP/FP/FN map and polygons;
6. training curves.

Every step runs the project's own command line, which is printed first, so each can be repeated by
hand. ``--quick`` runs the same pipeline at toy size (the test suite uses it).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    train_scenes: int
    val_scenes: int
    scene_size: int         # side of each training scene (px)
    chip_size: int
    chip_stride: int
    model: str
    batch_size: int
    depths: List[int]
    milestones: List[int]   # epochs after which the next (lr / 10, depth) stage begins
    final_stage_epochs: int  # epochs of the last stage: its checkpoints are the Pareto selection's candidates
    max_epochs: int
    max_steps_per_epoch: int
    big_scene: Tuple[int, int]  # (height, width) of the scene that is predicted and evaluated (px)
    window: int
    stride: int


# The full demo fits 2 CPU cores and 15 minutes: a tiny model, 64x64 chips, and a 3072x1024 scene predicted
# with 256 windows at stride 128 (the paper uses 64: four times the windows, for smoother seams). Most of
# the learning happens at the first learning rate (6 epochs); the last stage runs 3 epochs, so that the
# Pareto selection has 3 checkpoints to choose from.
FULL = Settings(train_scenes=16, val_scenes=4, scene_size=256, chip_size=64, chip_stride=64,
                model="fractalresnet_tiny", batch_size=4, depths=[0, 10, 20], milestones=[6, 7],
                final_stage_epochs=3, max_epochs=10, max_steps_per_epoch=32, big_scene=(1024, 3072), window=256,
                stride=128)
QUICK = Settings(train_scenes=2, val_scenes=1, scene_size=64, chip_size=32, chip_stride=32,
                 model="fractalresnet_tiny", batch_size=2, depths=[0, 10], milestones=[1], final_stage_epochs=3,
                 max_epochs=4, max_steps_per_epoch=2, big_scene=(128, 256), window=64, stride=32)


#: denser change than the generator's default, so that a few minutes of training see enough of it
CHANGE = {"p_new": 0.6, "p_demolish": 0.25}


def run(cmd: List[str], log: Path) -> None:
    """Run one step's command, echoing it; its output goes to the terminal and to ``log``."""
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    with open(log, "a") as out:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:  # not a terminal: progress comes as a line per stage and per 30 s
            out.write(line)
            sys.stdout.write("  " + line)
        if proc.wait() != 0:
            sys.exit(f"demo: step failed (exit {proc.returncode}); see {log}")


def make_data(out: Path, s: Settings) -> Path:
    from utilities.data.synthetic import write_geotiff_scene, write_levircd_layout

    write_levircd_layout(out / "levircd", n_per_split={"train": s.train_scenes, "val": s.val_scenes},
                         size=s.scene_size, seed=0, **CHANGE)
    scene = write_geotiff_scene(out / "scene", *s.big_scene, seed=2021, **CHANGE)
    print(f"  training scenes: {s.train_scenes} + {s.val_scenes} validation, {s.scene_size}x{s.scene_size} PNG "
          f"in {out / 'levircd'}\n  large scene: {s.big_scene[1]}x{s.big_scene[0]} GeoTIFFs in {out / 'scene'}")
    return Path(scene["date1"]).parent


def write_config(out: Path, data: Path, s: Settings, seed: int) -> Path:
    config = {
        "data": {"kind": "levircd", "root": str(data / "levircd"), "chip_size": s.chip_size,
                 "stride": s.chip_stride},
        "model": {"name": s.model},
        # the paper's random identity (50 %) halves the chips that show change; a short run wants more
        "augment": {"args": {"p_identity": 0.1}},
        "train": {"batch_size": s.batch_size, "depths": s.depths, "milestones": s.milestones,
                  "final_stage_epochs": s.final_stage_epochs, "max_epochs": s.max_epochs,
                  "max_steps_per_epoch": s.max_steps_per_epoch, "seed": seed},
        "output": {"run_dir": str(out / "run")},
    }
    path = out / "config.yaml"
    path.write_text("# written by `python -m demo`: a shortened evolving-loss schedule (stages at fixed\n"
                    "# epochs, a last stage of 3), identity augmentation at 10 % instead of the paper's 50 %\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def plot_history(history: Path, png: Path) -> None:
    """Training and validation loss, validation MCC and <FT>, with the stage changes marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(history.read_text())
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss")
    ax1.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation loss")
    ax2.plot(epochs, [r["val_mcc"] for r in rows], "o-", label="validation MCC")
    ax2.plot(epochs, [r["val_ft"] for r in rows], "s-", label="validation <FT>")
    for ax in (ax1, ax2):
        for prev, cur in zip(rows, rows[1:]):
            if cur["depth"] != prev["depth"]:
                ax.axvline(cur["epoch"] - 0.5, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("epoch (dashed: lr / 10 and next FT depth)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output/)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (seconds, for tests)")
    parser.add_argument("--ranks", type=int, default=2, help="Horovod ranks for training (default 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (train.seed: initialisation, chip order, augmentation; default 0). "
                             "The synthetic data stay the same.")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    out = Path(args.out).resolve()
    if (out / "run").exists():
        sys.exit(f"demo: {out} holds an earlier demo; remove it or give --out")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    py = sys.executable
    horovodrun = str(Path(py).parent / "horovodrun")
    tic = time.time()

    print("1/6 synthetic data")
    data = make_data(out / "data", s)
    config = write_config(out, out / "data", s, args.seed)

    print(f"2/6 training {s.model} on {args.ranks} Horovod ranks (evolving loss, depths {s.depths}, "
          f"seed {args.seed})")
    run([horovodrun, "-np", args.ranks, "-H", f"localhost:{args.ranks}", "--gloo", py, "train.py", "-c", config], log)

    print("3/6 Pareto-front selection of the most evolved stage's checkpoints")
    run([py, "select_models.py", out / "run", "--out", out / "selection"], log)
    ensemble = out / "selection" / "ensemble.json"

    print(f"4/6 tiled prediction of the {s.big_scene[1]}x{s.big_scene[0]} scene (window {s.window}, "
          f"stride {s.stride})")
    run([py, "predict.py", "--model", ensemble, "--date1", data / "date1.tif", "--date2", data / "date2.tif",
         "--out", out / "prediction", "--window", s.window, "--stride", s.stride, "--batch-size", 8, "--polygons"], log)

    print("5/6 evaluation of that prediction against the scene's label (the model does not run again)")
    run([py, "evaluate.py", "--prediction", out / "prediction" / "change_probability.tif", "--label",
         data / "label.tif", "--out", out / "evaluation", "--polygons"], log)

    print("6/6 training curves")
    plot_history(out / "run" / "history.json", out / "training_curves.png")

    print(f"\ndemo finished in {time.time() - tic:.0f} s. Outputs in {out}:")
    shown = (".tif", ".png", ".json", ".md", ".gpkg")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in shown
                       and "chips" not in p.parts and "data" not in p.parts and "checkpoints" not in p.parts):
        print(f"  {path.relative_to(out)}")
    metrics = out / "evaluation" / "metrics.md"
    if metrics.exists():
        print("\n" + metrics.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
