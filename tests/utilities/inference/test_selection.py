"""utilities/inference/selection.py and select_models.py: the Pareto front of MCC and <FT> over the most evolved
stage (paper Section 8.5.2, Fig. 13), the ensembles it writes, and the command line."""
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
from matplotlib.figure import Figure

import select_models
from tests.utilities.fakes import write_levircd_tree
from tests.utilities.tiny_models import save_checkpoint, tiny_network
from utilities.artifacts.model_io import load_predictor
from utilities.atomic import WriteError
from utilities.errors import InputError
from utilities.inference.selection import mark_front, pareto_front, stage_candidates, write_selection

ROOT = Path(__file__).resolve().parents[3]

#: epoch -> (FT depth, val MCC, val <FT>). Stage depth 0 holds the best values of the run, which must
#: not count: only the most evolved stage (depth 1) is a candidate.
HISTORY = {
    1: (0, 0.99, 0.99),
    2: (0, 0.98, 0.98),
    3: (1, 0.60, 0.70),   # front
    4: (1, 0.70, 0.60),   # front
    5: (1, 0.60, 0.60),   # dominated by 3 and 4
    6: (1, 0.70, 0.60),   # duplicate of 4: on the front as well
    7: (1, float("nan"), 0.95),  # NaN MCC: excluded with a warning
    8: (1, 0.65, 0.65),   # front
}
FRONT = [3, 4, 6, 8]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    for epoch, (depth, mcc, ft) in HISTORY.items():
        save_checkpoint(run, tiny_network(seed=epoch), epoch, metrics={"depth": depth, "val_mcc": mcc, "val_ft": ft})
    return run


@pytest.fixture(scope="module")
def selection(run_dir, tmp_path_factory):
    """The selection written to a folder outside the run (member paths relative to it)."""
    out = tmp_path_factory.mktemp("selection")
    candidates = stage_candidates(run_dir)
    mark_front(candidates)
    write_selection(candidates, out, "recorded")
    return out


def test_pareto_front_of_known_points():
    points = np.array([
        [0.5, 0.5],    # 0 front
        [0.6, 0.4],    # 1 front
        [0.4, 0.6],    # 2 front
        [0.4, 0.4],    # 3 dominated everywhere
        [0.6, 0.4],    # 4 duplicate of 1: front
        [np.nan, 0.9],  # 5 NaN: never on the front
        [0.55, 0.45],  # 6 front (between 0 and 1)
        [0.5, 0.45],   # 7 dominated by 0: equal MCC, lower FT
        [0.3, np.inf],  # 8 not finite: excluded
    ])
    assert np.flatnonzero(pareto_front(points)).tolist() == [0, 1, 2, 4, 6]
    assert pareto_front(np.zeros((0, 2))).tolist() == []
    assert pareto_front([[1.0, 1.0]]).tolist() == [True]


def test_only_the_most_evolved_stage_is_considered(run_dir, caplog):
    candidates = stage_candidates(run_dir)
    assert [c.epoch for c in candidates] == [3, 4, 5, 6, 7, 8] and {c.depth for c in candidates} == {1}
    with caplog.at_level(logging.WARNING):
        front = mark_front(candidates)
    assert [c.epoch for c in front] == FRONT
    assert "epochs [7] have a NaN validation MCC" in caplog.text


def test_pruned_checkpoints_are_skipped_with_a_warning(tmp_path, caplog):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, tiny_network(), epoch, metrics={"depth": 1, "val_mcc": 0.5, "val_ft": 0.5})
    (tmp_path / "checkpoints" / "epoch_0001.params").unlink()
    with caplog.at_level(logging.WARNING):
        assert [c.epoch for c in stage_candidates(tmp_path)] == [2]
    assert "epochs [1]" in caplog.text and "pruned" in caplog.text
    with pytest.raises(InputError, match="no checkpoint records"):
        stage_candidates(tmp_path / "empty")


def test_selection_files(selection, run_dir):
    report = json.loads((selection / "selection.json").read_text())
    assert report["stage_depth"] == 1 and report["front_epochs"] == FRONT
    rows = {r["epoch"]: r for r in report["candidates"]}
    assert sorted(rows) == [3, 4, 5, 6, 7, 8]
    assert rows[7]["val_mcc"] is None and not rows[7]["on_front"] and not rows[5]["on_front"]
    ensemble = json.loads((selection / "ensemble.json").read_text())
    assert ensemble["mode"] == "outputs" and len(ensemble["members"]) == len(FRONT)
    for member, epoch in zip(ensemble["members"], FRONT):
        assert not Path(member).is_absolute()
        assert (selection / member).resolve() == (run_dir / "checkpoints" / f"epoch_{epoch:04d}.params").resolve()
    params = json.loads((selection / "ensemble_params.json").read_text())
    assert params["mode"] == "parameters" and params["members"] == ensemble["members"]
    image = cv2.imread(str(selection / "pareto.png"))
    assert image is not None and image.shape[0] > 500 and image.shape[1] > 400


def test_output_ensemble_is_the_mean_of_its_members_outputs(selection, run_dir):
    rng = np.random.default_rng(0)
    date1, date2 = (rng.integers(0, 256, (1, 3, 16, 16)).astype(np.float32) for _ in range(2))
    ensemble = load_predictor(selection / "ensemble.json")(date1, date2)
    members = [load_predictor(run_dir / "checkpoints" / f"epoch_{e:04d}.params")(date1, date2) for e in FRONT]
    for k, output in enumerate(ensemble):
        np.testing.assert_allclose(output, np.mean([m[k] for m in members], axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(members[0][0], members[1][0])  # the members do differ


def test_parameter_average_is_the_mean_of_the_parameters(selection, run_dir):
    averaged = load_predictor(selection / "ensemble_params.json").network
    saved = [mx.nd.load(str(run_dir / "checkpoints" / f"epoch_{e:04d}.params")) for e in FRONT]
    params = averaged._collect_params_with_prefix()
    assert set(params) == set(saved[0])
    for name, param in params.items():
        expected = np.mean([s[name].asnumpy() for s in saved], axis=0)
        np.testing.assert_allclose(param.data().asnumpy(), expected, rtol=1e-5, atol=1e-7, err_msg=name)


def test_command_line_with_recomputed_metrics_and_comparison(run_dir, tmp_path):
    data = write_levircd_tree(tmp_path / "levir", splits=None, n=1, size=16)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "select_models.py", str(run_dir), "--out", str(out), "--levircd",
                             str(data), "--split", "none", "--compare"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "selection.json").read_text())
    assert report["metrics"].startswith("measured on LEVIR-CD")
    assert [r["epoch"] for r in report["candidates"]] == [3, 4, 5, 6, 7, 8]
    assert all(r["val_ft"] is not None and 0 <= r["val_ft"] <= 1 for r in report["candidates"])
    assert report["front_epochs"] and (out / "pareto.png").exists()
    compared = json.loads((out / "compare.json").read_text())["models"]
    assert len(compared) == 3 and {"output ensemble", "parameter average"} < set(compared)
    assert all(sum(m[k] for k in ("tp", "fp", "fn", "tn")) == 16 * 16 for m in compared.values())
    table = (out / "compare.md").read_text()
    assert "| output ensemble |" in table and "| parameter average |" in table and "| best single (epoch" in table


def test_command_line_in_process_and_its_errors(run_dir, tmp_path, capsys):
    assert select_models.main([str(run_dir), "--out", str(tmp_path / "sel")]) == 0
    assert f"Pareto front epochs {FRONT}" in capsys.readouterr().out
    assert select_models.main([str(tmp_path), "--compare"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --compare needs labelled data: --levircd ROOT [--split val] or --date1/--date2/--label"]
    assert select_models.main([str(tmp_path / "nothing")]) == 2
    assert "has no checkpoint records" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ damaged checkpoints, full disk


def damage(params: Path, how: str) -> None:
    data = params.read_bytes()
    params.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                        "byte-flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]}[how])


@pytest.fixture
def small_run(tmp_path) -> Path:
    """A last stage of three epochs: epoch 2 beats the others on both metrics (the front alone)."""
    for epoch, (mcc, ft) in {1: (0.6, 0.6), 2: (0.9, 0.9), 3: (0.5, 0.5)}.items():
        save_checkpoint(tmp_path / "run", tiny_network(seed=epoch), epoch,
                        metrics={"depth": 1, "val_mcc": mcc, "val_ft": ft})
    return tmp_path / "run"


def epoch_params(run: Path, epoch: int) -> Path:
    return run / "checkpoints" / f"epoch_{epoch:04d}.params"


@pytest.mark.parametrize("how", ["truncated", "empty", "byte-flipped"])
def test_damaged_parameters_are_no_candidates_and_each_is_named(small_run, tmp_path, caplog, how):
    """The best checkpoint (the front alone) and one off the front are damaged: both are left out, a warning
    naming each, and the ensemble is made of the best intact checkpoint, which predict loads."""
    for epoch in (2, 3):
        damage(epoch_params(small_run, epoch), how)
    out = tmp_path / "selection"
    with caplog.at_level(logging.WARNING):
        assert select_models.main([str(small_run), "--out", str(out)]) == 0
    reason = ("the file is empty" if how == "empty"
              else "its content differs from the SHA-256 in its record (a truncated or damaged copy)")
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {epoch_params(small_run, e)} cannot be read: {reason}; epoch {e} is not a candidate"
        for e in (2, 3)]
    assert [c["epoch"] for c in json.loads((out / "selection.json").read_text())["candidates"]] == [1]
    for name in ("ensemble.json", "ensemble_params.json"):
        ensemble = json.loads((out / name).read_text())
        assert ensemble["epochs"] == [1]
        assert [(out / m).resolve() for m in ensemble["members"]] == [epoch_params(small_run, 1).resolve()]
        load_predictor(out / name)


def test_no_intact_candidate_is_an_error_and_writes_nothing(small_run, tmp_path, capsys):
    for epoch in (1, 2):
        damage(epoch_params(small_run, epoch), "byte-flipped")
    epoch_params(small_run, 3).unlink()  # pruned
    out = tmp_path / "selection"
    assert select_models.main([str(small_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: no checkpoint of the last stage (FT depth 1) of {small_run} has intact parameters "
        f"(epochs [3] pruned, epochs [1, 2] damaged): nothing to select"]
    assert not out.exists()


def test_selection_files_appear_together_the_ensembles_last(run_dir, tmp_path, monkeypatch):
    """A full disk at pareto.png (written after selection.json) leaves none of the files, and the previous
    ensemble as it was; written in full, the ensembles take their names after the other files."""
    out = tmp_path / "selection"
    out.mkdir()
    (out / "ensemble.json").write_text("the previous selection's")
    candidates = stage_candidates(run_dir)
    mark_front(candidates)

    def full_disk(figure, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # a few bytes, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Figure, "savefig", full_disk)
        with pytest.raises(WriteError) as err:
            write_selection(candidates, out, "recorded")
    assert err.value.strerror == f"no space left on device writing {out / 'pareto.png'}"
    assert [p.name for p in out.iterdir()] == ["ensemble.json"]
    assert (out / "ensemble.json").read_text() == "the previous selection's"

    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), replace(src, dst)))
    write_selection(candidates, out, "recorded")
    assert renamed == ["selection.json", "pareto.png", "ensemble.stac.json", "ensemble_params.stac.json",  # cards
                       "ensemble.json", "ensemble_params.json"]
    assert json.loads((out / "ensemble.json").read_text())["epochs"] == FRONT

