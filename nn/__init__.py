"""The paper's building blocks as Gluon HybridBlocks (Diakogiannis et al. 2021, Listings 1-7)."""
from nn import threads  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)
from nn.activations import SigmoidCrisp
from nn.attention import FTAttention2D
from nn.conv import Conv2DN
from nn.fusion import ConcatConv2DN, Fusion
from nn.loss import FTnmtLoss, MultitaskFTLoss
from nn.norm import NORMS, GroupNorm, get_norm
from nn.pooling import PSPPooling, grid_max_pool
from nn.similarity import (
    FTanimoto,
    fractal_tanimoto,
    fractal_tanimoto_complement,
    mean_fractal_tanimoto,
    tanimoto_terms,
)
from nn.units import COMBINERS, CEECUnit, Expand, ExpandNCombine, FTAttResUnit, ResBlock, make_combiner

__all__ = [
    "SigmoidCrisp", "FTAttention2D", "Conv2DN", "ConcatConv2DN", "Fusion", "FTnmtLoss", "MultitaskFTLoss",
    "NORMS", "GroupNorm", "get_norm", "PSPPooling", "grid_max_pool", "FTanimoto", "fractal_tanimoto",
    "fractal_tanimoto_complement", "mean_fractal_tanimoto", "tanimoto_terms", "COMBINERS", "CEECUnit",
    "Expand", "ExpandNCombine", "FTAttResUnit", "ResBlock", "make_combiner",
]
