"""mantis's own CPU operators: an MXNet 1.9 custom-operator library (``mxnet/lib_api.h``).

Each fuses what took many passes over memory as a composition of MXNet operators (BENCHMARKS.md):

- ``mantis_group_norm`` (``group_norm.cc``): GroupNorm with a per-channel affine; MXNet's own GroupNorm
  operator was 40 % of a training step on CPU.
- ``mantis_upsample2x`` (``upsample2x.cc``): the bilinear x2 resize of the paper's E operation.
- ``mantis_tanimoto_terms``, ``mantis_attention_weighting``, ``mantis_scale_by_attention``
  (``fractal_attention.cc``): the FracTAL's similarity sums (eqs 5, 7, 11-12), its weighting of the
  values (eq. 13) and the attention fusion (eqs 14-16), without full-size intermediates.
- ``mantis_grid_max`` (``grid_max.cc``): the block maxima of PSPPooling's views.

``scripts/install.sh`` builds the library (``python -m nn.kernels``); :func:`load` registers its
operators with MXNet.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import mxnet as mx

#: the built library (not in git; built by scripts/install.sh)
LIBRARY = Path(__file__).with_name("libmantis_ops.so")
#: the C++ sources compiled into it
SOURCES = sorted(Path(__file__).parent.glob("*.cc"))

_loaded: Optional[bool] = None


def build(out: Path = LIBRARY) -> Path:
    """Compile :data:`SOURCES` with MXNet's ``lib_api`` into ``out`` (atomically); return ``out``.

    ``-O3 -fopenmp`` without ``-march``: the library may be built on a login node and run on compute
    nodes of another CPU generation. ``-Bsymbolic`` binds the library's calls into its own copy of
    ``lib_api.cc``: libmxnet.so exports the same ``mxnet::ext`` symbols, and without it loading the
    library next to Horovod's MXNet extension crashed (SIGFPE / "free(): invalid pointer").
    """
    mxnet_dir = Path(mx.__file__).parent
    compiler = os.environ.get("CXX", "g++")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / out.name
        command = [compiler, "-O3", "-fPIC", "-shared", "-std=c++17", "-fopenmp", "-Wl,-Bsymbolic",
                   f"-I{mxnet_dir / 'include'}", *map(str, SOURCES), str(mxnet_dir / "src" / "lib_api.cc"),
                   "-o", str(partial)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            raise RuntimeError(f"no C++ compiler {compiler!r} found to build {out.name}: install g++ (Debian: "
                               f"apt-get install g++) or set CXX") from None
        if result.returncode:
            raise RuntimeError(f"building {out.name} failed ({' '.join(command)}):\n{result.stderr}")
        partial.replace(out)
    return out


def load() -> bool:
    """Register the library's operators with MXNet (once); False, with a warning, if it is not built."""
    global _loaded
    if _loaded is None:
        _loaded = LIBRARY.exists()
        if _loaded:
            mx.library.load(str(LIBRARY), False)
        else:
            warnings.warn(f"{LIBRARY} is not built, so GroupNorm and the FracTAL run MXNet's much slower "
                          f"operators: run `bash scripts/install.sh` (or `python -m nn.kernels`)", stacklevel=2)
    return _loaded


def require(user: str) -> None:
    """Load the library for ``user``'s kernel form; a ValueError saying how to build it if it is not built."""
    if not load():
        raise ValueError(f"{user} form 'kernel' needs {LIBRARY}; run `bash scripts/install.sh`")


def parameter_input(F, param):
    """A trainable parameter as the input of one of these operators: through ``identity``.

    MXNet 1.9.1's library interface hands an operator's backward no request type, so a library operator
    always overwrites the gradients it computes; a parameter with ``grad_req='add'`` (gradients summed over
    several backward passes) would keep only the last pass's. Through ``identity``, the library operator
    writes into an intermediate and the native ``identity`` backward adds into the parameter's gradient as
    requested. The copy is of a parameter vector: negligible.
    """
    return F.identity(param)
