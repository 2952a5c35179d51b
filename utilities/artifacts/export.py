"""Export a trained model to ONNX (MXNet 1.9.1 ``mx.onnx.export_model``) and check it with onnxruntime.

The graph maps the two *standardised* date images ``date1, date2`` of shape ``(batch, C, size, size)``
to the three head outputs ``segmentation, boundary, distance`` (paper Section 6.3), each
``(batch, classes, size, size)``. The input standardisation (per-band mean/std of the training chips)
is not part of the graph: it is written beside the ONNX file as ``<name>.json`` with the bands. The file's
metadata (``metadata_props``) and its model card ``<name>.stac.json`` (a STAC MLM item,
:mod:`utilities.artifacts.model_card`) say what it takes and gives: bands and their order, normalisation,
input shape, outputs and their meaning, framework, fidelity.

What MXNet 1.9.1's exporter (at the installed onnx 1.14.1's opset 19) lacks or gets wrong on mantis's
blocks, each mended here without touching the installed package:

- GroupNorm has no converter. :func:`register_converters` adds one: reshape to ``(N, groups, -1, W)``,
  normalise with means taken in two stages, the operator's per-group gamma/beta, reshape back. (Not
  ``InstanceNormalization``, the obvious mapping: onnxruntime's one-pass float32 reductions make it
  1e-3 wrong on the large groups of full-resolution layers.)
  (mantis's :class:`nn.norm.GroupNorm` is exported in its ``"operator"`` form: the operator with unit
  gamma / zero beta, then its per-channel affine as broadcast operators, which export as they are. Its
  fused CPU kernel has no ONNX counterpart.)
- ``scalar - x`` and ``scalar / x`` are exported as ``x - scalar`` and ``x / scalar`` when ``x`` is a weight
  of a named block (the crisp sigmoid's clamp, eq. 18): replaced by :func:`register_converters`.
- Reductions are written in the opset-13 form (``axes`` as an attribute), which ONNX's checker rejects
  from opset 18 on: :func:`register_converters` moves the axes to an input.
- ``Reshape`` with MXNet's special codes (-2, -3, -4) is converted only for a few hard-coded patterns and
  silently wrong for others (the PSPPooling grid reshape gets two -1): the export writes the shapes MXNet
  infers for the export's fixed input size instead.
- Old-style ``Split`` nodes (from ``SliceChannel``) get no ``num_outputs``, which opset >= 18 requires and
  without which onnxruntime refuses the file: :func:`fix_split_outputs` sets it after the export.
- Two graph outputs that are the same node are merged without warning: every output gets its own
  identity node named after the output.

Ensembles (paper Section 8.5.2): a ``"parameters"`` ensemble exports its one averaged network; an
``"outputs"`` ensemble exports one graph that runs every member and averages their outputs (the
predictor's :class:`~utilities.artifacts.model_io.EnsembleMean`; k times the size and the work of one model).
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple, Union

import nn  # noqa: F401  (sets MXNet's OpenMP threads first)
from nn.norm import groupnorm_form

import mxnet as mx
import numpy as np
import onnx
import onnxruntime
from mxnet import gluon
from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
from onnx import helper, numpy_helper

from utilities.artifacts.model_card import card_path, model_card, onnx_metadata, spec_members, write_card
from utilities.artifacts.model_io import Predictor, load_predictor
from utilities.atomic import atomic_path, atomic_write_text
from utilities.errors import InputError

PathLike = Union[str, Path]

#: names of the graph's inputs and outputs, in the order of the network's arguments / results
INPUT_NAMES = ("date1", "date2")
OUTPUT_NAMES = ("segmentation", "boundary", "distance")
#: largest accepted absolute difference between onnxruntime's and MXNet's outputs
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported file does not reproduce MXNet's outputs."""


def _opset() -> int:
    """The ONNX opset mx2onnx exports to: the installed onnx's newest."""
    return onnx.defs.onnx_opset_version()


def _input(node: dict, kwargs: dict, k: int = 0):
    """The converted output (``.name``, ``.dtype``) that feeds input ``k`` of an mx2onnx ``node``."""
    i, j, *_ = node["inputs"][k]
    return kwargs["outputs_lookup"][i][j]


def _reduce_mean(data: str, out: str, axis: int, initializer: list) -> onnx.NodeProto:
    """``ReduceMean`` of ``data`` over ``axis`` (dimension kept), in the form of the export's opset."""
    node = helper.make_node("ReduceMean", [data], [out], name=out, axes=[axis], keepdims=1)
    if _opset() >= 18:
        _axes_as_input(node, initializer)
    return node


def _groupnorm_to_onnx(node: dict, **kwargs) -> List[onnx.NodeProto]:
    """ONNX nodes for MXNet's ``GroupNorm(data, gamma, beta)`` of 4-D data (Wu & He, 2018, eqs. 1-3).

    ``(N, C, H, W)`` is reshaped to ``(N, G, C/G*H, W)``; each group is centred on its mean and divided by
    ``sqrt(variance + eps)``; MXNet's per-group gamma/beta are applied and the result is reshaped back.
    Means are taken over ``W`` and then over ``C/G*H``: onnxruntime sums a reduction in one float32 pass,
    which over the 524288 values of a group of the paper's first level (8 channels of 256 x 256) is off
    by ~1e-3 after normalisation (its ``InstanceNormalization`` too), where the two-stage mean stays
    within 2e-6 of a float64 reference.
    """
    name = node["name"]
    data, gamma, beta = (_input(node, kwargs, k).name for k in range(3))
    attrs = node.get("attrs", {})
    groups = int(attrs.get("num_groups", 1))
    init = kwargs["initializer"]
    for tensor, value in ((f"{name}_grouping", [0, groups, -1, 0]), (f"{name}_per_group", [-1, 1, 1])):
        init.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name=tensor))
    init.append(numpy_helper.from_array(np.array(float(attrs.get("eps", 1e-5)), dtype=np.float32), name=f"{name}_eps"))

    def op(op_type: str, inputs: List[str], out: str) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, [f"{name}_{out}"], name=f"{name}_{out}")

    return [
        op("Shape", [data], "shape"),
        op("Reshape", [data, f"{name}_grouping"], "grouped"),
        _reduce_mean(f"{name}_grouped", f"{name}_row_mean", 3, init),
        _reduce_mean(f"{name}_row_mean", f"{name}_mean", 2, init),
        op("Sub", [f"{name}_grouped", f"{name}_mean"], "centred"),
        op("Mul", [f"{name}_centred", f"{name}_centred"], "square"),
        _reduce_mean(f"{name}_square", f"{name}_row_var", 3, init),
        _reduce_mean(f"{name}_row_var", f"{name}_var", 2, init),
        op("Add", [f"{name}_var", f"{name}_eps"], "var_eps"),
        op("Sqrt", [f"{name}_var_eps"], "std"),
        op("Div", [f"{name}_centred", f"{name}_std"], "normed"),
        op("Reshape", [gamma, f"{name}_per_group"], "gamma"),
        op("Reshape", [beta, f"{name}_per_group"], "beta"),
        op("Mul", [f"{name}_normed", f"{name}_gamma"], "scaled"),
        op("Add", [f"{name}_scaled", f"{name}_beta"], "shifted"),
        helper.make_node("Reshape", [f"{name}_shifted", f"{name}_shape"], [name], name=name),
    ]


def _reversed_scalar(op_type: str) -> Callable:
    """A converter for MXNet's ``scalar <op> x`` (``_rminus_scalar``, ``_rdiv_scalar``) as ONNX ``op_type``.

    mx2onnx computes ``x - scalar`` instead when ``x`` is a weight of a block whose name has a prefix (e.g.
    the ``smooth - gamma`` of the crisp sigmoid's clamp, eq. 18), and prints the node names to stdout.
    """
    def converter(node: dict, **kwargs) -> List[onnx.NodeProto]:
        name = node["name"]
        data = _input(node, kwargs)
        scalar = np.array(float(node["attrs"]["scalar"]), dtype=data.dtype)
        kwargs["initializer"].append(numpy_helper.from_array(scalar, name=f"{name}_scalar"))
        return [helper.make_node(op_type, [f"{name}_scalar", data.name], [name], name=name)]

    return converter


#: ONNX reductions whose ``axes`` moved from an attribute to an input in opset 18
_AXES_INPUT_FROM_18 = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                       "ReduceMin", "ReduceProd", "ReduceSumSquare"}
#: MXNet operators whose mx2onnx converters (written for opset 13) emit such reductions
_REDUCING_OPS = ("max", "min", "mean", "prod", "norm", "LayerNorm", "_contrib_arange_like", "repeat")


def _axes_as_input(node: onnx.NodeProto, initializer: list) -> None:
    """Rewrite an opset-13 reduction ``node`` to the opset-18 form (``axes`` as an int64 input)."""
    axes = next((a for a in node.attribute if a.name == "axes"), None)
    if node.op_type not in _AXES_INPUT_FROM_18 or axes is None:
        return
    name = f"{node.output[0]}_axes"
    initializer.append(numpy_helper.from_array(np.array(axes.ints, dtype=np.int64), name=name))
    node.attribute.remove(axes)
    node.input.append(name)


def _opset18(convert: Callable) -> Callable:
    """An mx2onnx converter that runs ``convert`` and moves the reductions' axes to inputs."""
    def converter(node: dict, **kwargs):
        result = convert(node, **kwargs)
        for onnx_node in result[0] if isinstance(result, tuple) else result:
            if isinstance(onnx_node, onnx.NodeProto):
                _axes_as_input(onnx_node, kwargs["initializer"])
        return result

    return converter


def register_converters() -> None:
    """Register with mx2onnx what MXNet 1.9.1 lacks (idempotent).

    - GroupNorm (:func:`_groupnorm_to_onnx`), at opset 12 (later opsets fall back to it);
    - correct ``_rminus_scalar`` and ``_rdiv_scalar`` (:func:`_reversed_scalar`);
    - from opset 18 on, the converters of :data:`_REDUCING_OPS` wrapped to give the reductions' axes as
      an input: mx2onnx writes them as an attribute, which opset 18 removed (the file fails ONNX's checker).
    """
    MXNetGraph.register("GroupNorm", opset_version=12)(_groupnorm_to_onnx)
    MXNetGraph.register("_rminus_scalar", opset_version=12)(_reversed_scalar("Sub"))
    MXNetGraph.register("_rdiv_scalar", opset_version=12)(_reversed_scalar("Div"))
    if _opset() >= 18:
        for op in _REDUCING_OPS:
            MXNetGraph.register(op, opset_version=18)(_opset18(MXNetGraph.registry_[13][op]))


#: MXNet reshape codes that mx2onnx converts only in a few hard-coded patterns (and silently wrong in others,
#: e.g. ``(0, 0, -4, n, -1, -4, n, -1)`` becomes a shape with two -1)
_SPECIAL_RESHAPE_CODES = {-2, -3, -4}


def _static_reshape(shapes: Dict[str, List[Tuple[int, ...]]], stock: Callable) -> Callable:
    """A ``Reshape`` converter that writes the output shape MXNet inferred when the target uses a special
    code of :data:`_SPECIAL_RESHAPE_CODES`, and defers to ``stock`` otherwise.

    ``shapes`` lists, per node name, the output shapes of the nodes of that name in graph order (a block
    called twice, like the Siamese encoder, repeats its names; mx2onnx renames the repeats
    ``idx_<index>_<name>``).
    """
    seen: Dict[str, int] = {}

    def converter(node: dict, **kwargs):
        name = node["name"]
        prefix = f"idx_{kwargs.get('idx')}_"
        original = name[len(prefix):] if name.startswith(prefix) else name
        occurrence = seen[original] = seen.get(original, -1) + 1
        target = ast.literal_eval(node.get("attrs", {}).get("shape", "()"))
        if not _SPECIAL_RESHAPE_CODES.intersection(target) or occurrence >= len(shapes.get(original, ())):
            return stock(node, **kwargs)
        kwargs["initializer"].append(numpy_helper.from_array(np.array(shapes[original][occurrence], dtype=np.int64),
                                                             name=f"{name}_static_shape"))
        return [helper.make_node("Reshape", [_input(node, kwargs).name, f"{name}_static_shape"], [name], name=name)]

    return converter


@contextlib.contextmanager
def _static_reshapes(symbol: mx.sym.Symbol, params: Dict[str, mx.nd.NDArray], shape: Tuple[int, ...]) -> Iterator:
    """Within the block, mx2onnx converts ``Reshape`` with the shapes MXNet infers for inputs of ``shape``."""
    internals = symbol.get_internals()
    known = {n: v.shape for n, v in params.items()}
    _, out_shapes, _ = internals.infer_shape(**known, **{n: shape for n in INPUT_NAMES})
    shapes: Dict[str, List[Tuple[int, ...]]] = {}
    for output, out_shape in zip(internals.list_outputs(), out_shapes):
        if output.endswith("_output"):
            shapes.setdefault(output[:-len("_output")], []).append(out_shape)
    stock = MXNetGraph.registry_[12]["Reshape"]
    MXNetGraph.registry_[12]["Reshape"] = _static_reshape(shapes, stock)
    try:
        yield
    finally:
        MXNetGraph.registry_[12]["Reshape"] = stock


def _tidy(model: onnx.ModelProto) -> None:
    """Drop the weights mx2onnx lists among the graph inputs and the constants no node uses."""
    used = {name for node in model.graph.node for name in node.input}
    weights = [t for t in model.graph.initializer if t.name in used]
    inputs = [i for i in model.graph.input if i.name in INPUT_NAMES]
    for field, keep in ((model.graph.initializer, weights), (model.graph.input, inputs)):
        del field[:]
        field.extend(keep)


def missing_converters(symbol: mx.sym.Symbol) -> List[str]:
    """Operators of ``symbol`` that mx2onnx cannot convert at the installed ONNX opset."""
    registered = set()
    for version, converters in MXNetGraph.registry_.items():
        if version <= _opset():
            registered.update(converters)
    ops = {n["op"] for n in json.loads(symbol.tojson())["nodes"]}
    return sorted(ops - registered - {"null"})


def fix_split_outputs(model: onnx.ModelProto) -> int:
    """Set ``num_outputs`` on ``Split`` nodes that give neither it nor split sizes (required from opset 18).

    Returns
    -------
    int
        The number of nodes fixed.
    """
    fixed = 0
    for node in model.graph.node:
        has_sizes = len(node.input) > 1 and node.input[1]
        if node.op_type == "Split" and not has_sizes and all(a.name != "num_outputs" for a in node.attribute):
            node.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
            fixed += 1
    return fixed


def network_symbol(net: gluon.HybridBlock) -> Tuple[mx.sym.Symbol, Dict[str, mx.nd.NDArray]]:
    """The network's symbol with inputs :data:`INPUT_NAMES`, one identity output per name of
    :data:`OUTPUT_NAMES`, and its parameters by symbol name."""
    with groupnorm_form("operator"):
        outputs = net(*(mx.sym.var(n) for n in INPUT_NAMES))
    if len(outputs) != len(OUTPUT_NAMES):
        raise ExportError(f"the network has {len(outputs)} outputs, expected {len(OUTPUT_NAMES)} "
                          f"({', '.join(OUTPUT_NAMES)})")
    symbol = mx.sym.Group([mx.sym.identity(o, name=n) for o, n in zip(outputs, OUTPUT_NAMES)])
    arguments = set(symbol.list_inputs())
    params = {p.name: p.data() for p in net.collect_params().values() if p.name in arguments}
    return symbol, params


def _check_size(predictor: Predictor, size: int, batch: int) -> None:
    multiple = predictor.size_multiple
    if size < multiple or size % multiple:
        raise InputError(f"input size {size} is not a positive multiple of {multiple}, as this model needs")
    if batch < 1:
        raise InputError(f"batch size must be >= 1, got {batch}")


def write_onnx(net: gluon.HybridBlock, shape: Tuple[int, ...], path: PathLike) -> int:
    """Export ``net`` (two inputs, three outputs) for inputs of ``shape`` to the ONNX file ``path``.

    Returns
    -------
    int
        The number of ``Split`` nodes given their ``num_outputs``.

    Raises
    ------
    ExportError
        An operator has no converter (the message names it and what is needed), or mx2onnx fails.
    """
    path = os.fspath(path)
    register_converters()
    symbol, params = network_symbol(net)
    missing = missing_converters(symbol)
    if missing:
        raise ExportError(f"cannot export operator(s) {', '.join(missing)} to ONNX: MXNet 1.9.1's mx2onnx has no "
                          f"converter for them at opset {_opset()}; one must be registered with "
                          f"MXNetGraph.register (as utilities/artifacts/export.py does for GroupNorm)")
    try:
        with _static_reshapes(symbol, params, shape):
            mx.onnx.export_model(symbol, params, in_shapes=[shape, shape], in_types=[np.float32, np.float32],
                                 onnx_file_path=path)
        model = onnx.load(path)
        _tidy(model)
        fixed = fix_split_outputs(model)
        onnx.checker.check_model(model)
    except (AttributeError, KeyError, NotImplementedError, ValueError, onnx.checker.ValidationError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"mx2onnx cannot export this model: {first}") from None
    onnx.save(model, path)
    return fixed


def onnx_outputs(path: PathLike) -> List[str]:
    """Names of an ONNX file's graph outputs, in the file's order."""
    return [o.name for o in onnx.load(str(path)).graph.output]


def parity(path: PathLike, net: gluon.HybridBlock, shape: Tuple[int, ...], seed: int = 0) -> Dict[str, float]:
    """Largest absolute difference per output between onnxruntime on ``path`` and MXNet's ``net``, on
    standard-normal inputs of ``shape`` (standardised images)."""
    rng = np.random.default_rng(seed)
    inputs = {n: rng.standard_normal(shape).astype(np.float32) for n in INPUT_NAMES}
    expected = [o.asnumpy() for o in net(*(mx.nd.array(inputs[n]) for n in INPUT_NAMES))]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except RuntimeError as err:  # onnxruntime's Fail, InvalidGraph, ...
        raise ExportError(f"onnxruntime cannot load the exported file: {' '.join(str(err).split())}") from None
    got = session.run(list(OUTPUT_NAMES), inputs)
    return {n: float(np.abs(g - e).max()) for n, g, e in zip(OUTPUT_NAMES, got, expected)}


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well the file reproduces MXNet."""

    model_file: str
    normalization_file: str
    input_shape: Tuple[int, ...]
    members: int
    opset: int
    split_nodes_fixed: int
    max_abs_diff: Dict[str, float]
    tolerance: float
    card_file: str = ""


def write_metadata(path: PathLike, metadata: Dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file ``path`` by ``metadata``."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _onnx_assets(out: Path) -> Dict[str, Dict[str, object]]:
    return {"model": {"href": out.name, "type": "application/octet-stream; framework=onnx",
                      "roles": ["mlm:model", "mlm:compiled", "model"], "mlm:artifact_type": "onnx",
                      "title": "the network as an ONNX graph (inputs date1, date2 standardised; outputs segmentation, "
                               "boundary, distance)"},
            "normalization": {"href": normalization_path(out).name, "type": "application/json", "roles": ["metadata"],
                              "title": "the per-band mean and std to standardise the inputs with, and the bands"}}


def normalization_path(onnx_path: PathLike) -> Path:
    """``<name>.json`` beside ``<name>.onnx``."""
    return Path(onnx_path).with_suffix(".json")


def export_onnx(spec: PathLike, out: PathLike, size: int = 256, batch: int = 1, tolerance: float = TOLERANCE,
                seed: int = 0) -> ExportReport:
    """Export a model spec (checkpoint, run directory or ensemble file) to ONNX and check its parity.

    Parameters
    ----------
    spec : path
        As for :func:`utilities.artifacts.model_io.load_predictor`.
    out : path
        The ``.onnx`` file to write; the normalization goes to :func:`normalization_path`.
    size : int
        Height and width of the inputs (a multiple of the model's ``size_multiple``; the paper infers
        on 256 x 256 windows, Section 8.5.1).
    batch : int
        Batch size of the graph.
    tolerance : float
        Largest accepted absolute difference between onnxruntime and MXNet, per output.
    seed : int
        Seed of the random inputs of the parity check.

    Returns
    -------
    ExportReport

    Raises
    ------
    InputError
        Unusable spec, size or batch.
    ExportError
        An operator without converter, or a parity check above ``tolerance`` (no file is then written).
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"the output file {out} must end in .onnx (its normalization goes to <name>.json)")
    predictor = load_predictor(spec)
    _check_size(predictor, size, batch)
    net = predictor.network
    shape = (batch, predictor.channels, size, size)
    with atomic_path(out, suffix=".onnx") as tmp:
        fixed = write_onnx(net, shape, tmp)
        names = onnx_outputs(tmp)
        if sorted(names) != sorted(OUTPUT_NAMES):
            raise ExportError(f"the exported graph has outputs {names}, expected {list(OUTPUT_NAMES)}")
        diffs = parity(tmp, net, shape, seed)
        worst = max(diffs, key=diffs.get)
        if not diffs[worst] <= tolerance:
            raise ExportError(f"ONNX parity check failed: output {worst!r} differs from MXNet by "
                              f"{diffs[worst]:.3g} > {tolerance:g}; {out} was not written")
        members, mode = spec_members(spec)
        card = model_card(members, mode, f"{members[0][0].model}-{out.stem}", _onnx_assets(out),
                          parameters=sum(p.data().size for p in net.collect_params().values()), input_shape=shape,
                          framework=("ONNX", onnx.__version__), extra={"opset": _opset(), "exported_from": str(spec),
                                                                       "trained_with": f"MXNet {mx.__version__}"})
        write_metadata(tmp, onnx_metadata(card))
        norm_path = normalization_path(out)
        normalization = {"inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "input_shape": list(shape),
                         "bands": predictor.bands, "mean": predictor.mean.ravel().tolist(),
                         "std": predictor.std.ravel().tolist(),
                         "usage": "feed (image - mean) / std per band (band-first, float32) as date1 and date2"}
        atomic_write_text(norm_path, json.dumps(normalization, indent=2))
        write_card(card_path(out), card)
    return ExportReport(model_file=os.fspath(out), normalization_file=os.fspath(norm_path), input_shape=shape,
                        members=predictor.members, opset=_opset(), split_nodes_fixed=fixed, max_abs_diff=diffs,
                        tolerance=tolerance, card_file=os.fspath(card_path(out)))

