"""utilities/artifacts/export.py and export.py: ONNX export of tiny models with onnxruntime parity, the graph's
inputs and outputs, the normalization file, the fixes mx2onnx needs, and errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

from nn import GroupNorm, grid_max_pool

import numpy as np
import onnx
import onnxruntime
import pytest
from mxnet import gluon
from onnx import helper

import export as export_cli
from tests.utilities.tiny_models import NORMALIZATION, save_checkpoint, tiny_network
from utilities.artifacts.export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    TOLERANCE,
    ExportError,
    export_onnx,
    fix_split_outputs,
    missing_converters,
    network_symbol,
    parity,
    write_onnx,
)
from utilities.artifacts.model_io import EnsembleMean, Predictor
from utilities.errors import InputError

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("model", ["fractalresnet_tiny", "ceecnetv1_tiny"])
def test_onnx_parity_outputs_and_normalization(tmp_path, model):
    save_checkpoint(tmp_path / "run", tiny_network(model), epoch=1, name=model)
    out = tmp_path / f"{model}.onnx"
    report = export_onnx(tmp_path / "run", out, size=32)
    print(f"{model}: max |onnxruntime - MXNet| {report.max_abs_diff} (tolerance {TOLERANCE:g})")
    assert set(report.max_abs_diff) == set(OUTPUT_NAMES)
    assert max(report.max_abs_diff.values()) <= TOLERANCE
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)  # the weights are not graph inputs
    names = [o.name for o in graph.output]
    assert len(names) == 3 and sorted(names) == sorted(OUTPUT_NAMES)
    producers = {n.output[0]: n for n in graph.node}
    assert all(producers[name].op_type == "Identity" for name in names)
    assert len({producers[name].input[0] for name in names}) == 3  # three distinct tensors, none merged
    for dim in graph.input[0].type.tensor_type.shape.dim[1:]:
        assert dim.dim_value in (3, 32)
    normalization = json.loads(out.with_suffix(".json").read_text())
    assert normalization["mean"] == NORMALIZATION["mean"] and normalization["std"] == NORMALIZATION["std"]
    assert normalization["bands"] is None and normalization["input_shape"] == [1, 3, 32, 32]
    assert normalization["outputs"] == list(OUTPUT_NAMES)


def test_output_ensemble_exports_as_one_averaging_graph(tmp_path):
    """The predictor's own ensemble block is what is exported; onnxruntime reproduces it."""
    members = [tiny_network(seed=s) for s in (1, 2)]
    net = Predictor(members, NORMALIZATION["mean"], NORMALIZATION["std"]).network
    assert isinstance(net, EnsembleMean)
    shape = (2, 3, 8, 8)
    write_onnx(net, shape, tmp_path / "ensemble.onnx")
    diffs = parity(tmp_path / "ensemble.onnx", net, shape)
    assert max(diffs.values()) <= TOLERANCE


def test_exported_ensemble_of_a_file_averages_its_members(tmp_path):
    for epoch, seed in ((1, 1), (2, 2)):
        save_checkpoint(tmp_path / "run", tiny_network(seed=seed), epoch=epoch)
    members = [str(tmp_path / "run" / "checkpoints" / f"epoch_{e:04d}.params") for e in (1, 2)]
    (tmp_path / "ensemble.json").write_text(json.dumps({"members": members, "mode": "outputs"}))
    report = export_onnx(tmp_path / "ensemble.json", tmp_path / "ensemble.onnx", size=8)
    assert report.members == 2 and max(report.max_abs_diff.values()) <= TOLERANCE


def test_parity_failure_exits_1_and_writes_nothing(tmp_path, monkeypatch, capsys):
    save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    out = tmp_path / "model.onnx"
    monkeypatch.setattr("utilities.artifacts.export.parity", lambda *args: {"segmentation": 1e-6, "boundary": 0.5,
                                                                  "distance": 0.0})
    assert export_cli.main(["--model", str(tmp_path / "run"), "--out", str(out), "--size", "8"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: ONNX parity check failed: output 'boundary' differs from MXNet by 0.5 > 0.0001; {out} was not written"]
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*")) == []
    assert not out.with_suffix(".json").exists()


def test_split_nodes_get_num_outputs():
    """mx2onnx's Split (from SliceChannel) has no num_outputs, which opset >= 18 requires."""
    split = helper.make_node("Split", ["x"], ["a", "b"], axis=1)
    graph = helper.make_graph([split], "split", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2]) for n in "ab"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert fix_split_outputs(model) == 1 and fix_split_outputs(model) == 0
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = session.run(None, {"x": np.arange(4, dtype=np.float32)[None]})
    assert a.tolist() == [[0, 1]] and b.tolist() == [[2, 3]]


class Siamese(gluon.HybridBlock):
    """``body`` applied to both dates, as the mantis encoder is (its node names repeat); three outputs."""

    def __init__(self, body: gluon.HybridBlock):
        super().__init__()
        self.body = body

    def hybrid_forward(self, F, date1, date2):
        a, b = self.body(date1), self.body(date2)
        return a, b, a - b


class GridMax(gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return grid_max_pool(F, x, 2)  # reshapes (0, 0, -4, 2, -1, -4, 2, -1) and (0, 0, -3, -3)


def test_special_reshapes_of_a_block_called_twice(tmp_path):
    """mx2onnx turns (0, 0, -4, n, -1, -4, n, -1) into a shape with two -1: the export writes MXNet's
    inferred shapes, also for the repeated node names of a block called on both dates."""
    net = Siamese(GridMax())
    write_onnx(net, (1, 2, 8, 8), tmp_path / "grid.onnx")
    assert max(parity(tmp_path / "grid.onnx", net, (1, 2, 8, 8)).values()) == 0


def test_groupnorm_keeps_precision_on_large_groups(tmp_path):
    """Groups of 131072 non-negative values (a ReLU's output at full resolution): a one-pass float32 mean,
    as onnxruntime's InstanceNormalization takes, is ~5e-4 off after normalisation."""
    body = gluon.nn.HybridSequential()
    body.add(gluon.nn.Activation("relu"), GroupNorm(32, num_groups=4))
    net = Siamese(body)
    net.initialize()
    shape = (1, 32, 128, 128)
    write_onnx(net, shape, tmp_path / "gn.onnx")
    assert max(parity(tmp_path / "gn.onnx", net, shape).values()) < 1e-5


class Unexportable(gluon.HybridBlock):
    def hybrid_forward(self, F, date1, date2):
        return F.gammaln(date1), date2, date1 + date2


def test_an_operator_without_converter_is_named(tmp_path):
    symbol, _ = network_symbol(Unexportable())
    assert missing_converters(symbol) == ["gammaln"]
    with pytest.raises(ExportError, match=r"cannot export operator\(s\) gammaln to ONNX: .* must be registered"):
        write_onnx(Unexportable(), (1, 3, 8, 8), tmp_path / "x.onnx")


def test_input_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(tmp_path / "missing.params", tmp_path / "m.onnx")
    save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    with pytest.raises(InputError, match="not a positive multiple of 8"):
        export_onnx(tmp_path / "run", tmp_path / "m.onnx", size=12)
    with pytest.raises(InputError, match="must end in .onnx"):
        export_onnx(tmp_path / "run", tmp_path / "m.json")
    assert export_cli.main(["--model", str(tmp_path / "missing.params"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: checkpoint {tmp_path / 'missing.params'} does not exist"]


def test_command_line(tmp_path):
    save_checkpoint(tmp_path / "run", tiny_network(), epoch=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "export.py", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx"),
               "--size", "8"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parity |onnxruntime - MXNet| max:" in result.stdout and (tmp_path / "m.json").exists()
    assert result.stderr == ""  # no converter chatter, no onnxruntime warnings
