"""Parameters trained with the authors' public code, loaded into a mantis network.

A network built with ``fidelity="authors"`` (:mod:`mantis.models`) has the parameters of the
authors' ``mantis_dn_cmtsk`` one for one, under mantis's names. :func:`load_authors_parameters` reads
a ``.params`` file that their network wrote with ``save_parameters`` and renames each entry by the
rules of :data:`RENAMES` (block names of their code -> mantis's), checking every shape. The network
then gives their outputs, and mantis's tiled inference, GeoTIFF output and ONNX export work on it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import mxnet as mx

from mantis.models import MantisCD
from utilities.errors import InputError

Rules = List[Tuple[str, str]]

#: the authors' structure names -> mantis's, applied in order to each parameter name (dots separate
#: the blocks; ``features.`` is their feature extractor, ``head.`` their head).
RENAMES: Rules = [
    # macro-topology
    (r"^features\.", ""),
    (r"^conv_first\.", "stem."),
    (r"^fuse_first\.", "fuse_stem."),
    (r"^convs_dn\.(\d+)\.0\.", r"encoder.\1."),
    (r"^fuse\.(\d+)\.", r"fusions.\1."),
    (r"^pools\.(\d+)\.convdn\.", r"downs.\1."),
    (r"\.conv_norm_final\.", ".conv_out."),                                   # PSPPooling
    (r"^convs_up\.(\d+)\.0\.", r"decoder.\1.unit."),
    (r"^UpCombs\.(\d+)\.(up\.convup_normed|conv1)\.", r"decoder.\1.up."),    # concatenation / upFuse
    (r"^UpCombs\.(\d+)\.conv_normed\.", r"decoder.\1.combine.conv."),
    (r"^UpCombs\.(\d+)\.conv3\.", r"decoder.\1.combine."),
    # head
    (r"^head\.psp_2ndlast\.", "head.psp."),
    (r"^head\.distance_logits\.logits\.", "head.dist_logits.body."),
    (r"^head\.bound_logits\.logits\.", "head.bound_logits.body."),
    (r"^head\.final_segm_logits\.logits\.", "head.segm_logits.body."),
    (r"^head\.dist_Equalizer\.", "head.dist_eq."),
    (r"^head\.bound_Equalizer\.", "head.bound_eq."),
    (r"^head\.Comb_bound_dist\.", "head.combine_eq."),
    (r"^head\.CrispSigm\.", "head.bound_act."),
    # CEECNet unit
    (r"\.conv_init_1\.", ".conv_ce."),
    (r"\.compr11\.", ".compress_ce1."),
    (r"\.compr12\.", ".compress_ce2."),
    (r"\.expand1\.", ".expand_ce."),
    (r"\.conv_init_2\.", ".conv_ec."),
    (r"\.expand2\.", ".expand_ec."),
    (r"\.compr21\.", ".compress_ec."),
    (r"\.compr22\.", ".combine_ec."),
    (r"\.ratt122\.", ".att_ce."),
    (r"\.ratt211\.", ".att_ec."),
    (r"\.(combine_ec|collect)\.(conv2d|norm_layer)\.", r".\1.conv.\2."),     # V1: a plain normed convolution
    (r"\.expand_ce\.conv1\.", ".expand_ce.conv."),
    (r"\.expand_ce\.conv3\.", ".expand_ce.combine."),                         # V2's Fusion
    # FracTAL ResNet unit
    (r"\.attn\.", ".att."),
    (r"\.block1\.BN(\d)\.", r".res.norm\1."),
    (r"\.block1\.conv(\d)\.", r".res.conv\1."),
    # self-attention wrapper, relative attention, normed convolution
    (r"\.att\.att\.", ".att."),
    (r"\.relatt(12|21)\.", r".att\1."),
    (r"\.conv2d\.", ".conv."),
    (r"\.norm_layer\.", ".norm."),
]

#: unit -> what the second convolution of the CE view's ExpandNCombine is (applied after
#: :data:`RENAMES`): V1 convolves the concatenation (mantis: the combiner's), V2 the high-resolution
#: input (mantis: ``conv_high``)
EXPAND_RENAMES: Dict[str, Rules] = {
    "ceecnetv1": [(r"\.expand_ce\.conv2\.", ".expand_ce.combine.conv.")],
    "ceecnetv2": [(r"\.expand_ce\.conv2\.", ".expand_ce.conv_high.")],
    "fractalresnet": [],
}


def mantis_name(name: str, unit: str) -> str:
    """The mantis name of the authors' parameter ``name`` in a network of ``unit``."""
    for pattern, replacement in RENAMES + EXPAND_RENAMES[unit]:
        name = re.sub(pattern, replacement, name)
    return name


def _fits(expected: Tuple[int, ...], shape: Tuple[int, ...]) -> bool:
    """``shape`` fills ``expected`` (whose unknown, deferred dimensions are 0)."""
    return len(expected) == len(shape) and all(e in (0, s) for e, s in zip(expected, shape))


def load_authors_parameters(net: MantisCD, path: str | Path, ctx: mx.Context | None = None) -> None:
    """Load a ``.params`` file saved by the authors' ``mantis_dn_cmtsk`` into ``net``.

    ``net`` is a freshly built (or already initialised) :class:`~mantis.models.MantisCD` with
    ``fidelity="authors"`` and the configuration the file was trained with (unit, ``nfilters``,
    ``depth``, ``nheads_start``, ``psp_depth``, ``upfuse``, ...); no forward pass is needed: the file
    gives the shapes Gluon would defer, as in ``load_parameters``. Raises
    :class:`~utilities.errors.InputError` (one line) when the file cannot be read, when one of its
    parameters has no counterpart or another shape in ``net``, or when ``net`` has a parameter the file
    lacks.
    """
    path = Path(path)
    config = net.config
    if config["fidelity"] != "authors":
        raise InputError(f"{path}: the authors' parameters load only into a network built with "
                         f"fidelity='authors', not {config['fidelity']!r}")
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as error:
        raise InputError(f"{path}: not an MXNet parameter file ({str(error).strip().splitlines()[-1]})") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: holds unnamed arrays, not the named parameters save_parameters writes")
    params = net._collect_params_with_prefix()
    where = f"{config['unit']} nfilters={config['nfilters']} depth={config['depth']} upfuse={config['upfuse']}"
    matched = {}
    for name, array in loaded.items():
        target = mantis_name(name, config["unit"])
        if target not in params:
            raise InputError(f"{path}: parameter {name!r} has no counterpart ({target!r}) in the mantis network "
                             f"({where})")
        if not _fits(params[target].shape, array.shape):
            raise InputError(f"{path}: parameter {name!r} has shape {array.shape}, the mantis network ({where}) "
                             f"expects {params[target].shape} for {target!r}")
        matched[target] = array
    missing = [name for name in params if name not in matched]
    if missing:
        raise InputError(f"{path}: {len(missing)} parameter(s) of the mantis network ({where}) are not in the file, "
                         f"e.g. {missing[0]!r}")
    ctx = ctx or mx.cpu()
    for target, array in matched.items():
        params[target]._load_init(array, ctx)
