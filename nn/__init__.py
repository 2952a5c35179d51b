"""The paper's building blocks as Gluon HybridBlocks (Diakogiannis et al. 2021, Listings 1-7)."""
from . import threads  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)
from .activations import SigmoidCrisp
from .attention import FTAttention2D
from .conv import Conv2DN
from .fusion import ConcatConv2DN, Fusion
from .loss import FTnmtLoss, MultitaskFTLoss
from .norm import NORMS, GroupNorm, get_norm
from .pooling import PSPPooling, grid_max_pool
from .similarity import FTanimoto, fractal_tanimoto, fractal_tanimoto_complement, mean_fractal_tanimoto, tanimoto_terms
from .units import COMBINERS, CEECUnit, Expand, ExpandNCombine, FTAttResUnit, ResBlock, make_combiner

__all__ = [
    "SigmoidCrisp", "FTAttention2D", "Conv2DN", "ConcatConv2DN", "Fusion", "FTnmtLoss", "MultitaskFTLoss",
    "NORMS", "GroupNorm", "get_norm", "PSPPooling", "grid_max_pool", "FTanimoto", "fractal_tanimoto",
    "fractal_tanimoto_complement", "mean_fractal_tanimoto", "tanimoto_terms", "COMBINERS", "CEECUnit",
    "Expand", "ExpandNCombine", "FTAttResUnit", "ResBlock", "make_combiner",
]
