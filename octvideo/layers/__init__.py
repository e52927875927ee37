"""Layers: the octave representation lives here and nowhere else."""
from .octave import (
    OctBatchNorm,
    OctMaxPool3d,
    OctReLU,
    OctTensor,
    apply_per_branch,
    check_octave_sizes,
    is_octave,
    low_size,
    make_norm,
    oct_add,
    oct_add_,
    spatial_pool2x,
    split_channels,
)
from .pooling import MaxPoolReLU, max_pool
from .octconv import OctConv2d, OctConv3d, reference_mode, upsample_to

__all__ = [
    "OctConv3d", "OctConv2d", "MaxPoolReLU", "max_pool", "OctBatchNorm", "OctReLU", "OctMaxPool3d", "OctTensor",
    "apply_per_branch", "check_octave_sizes", "is_octave", "low_size", "make_norm",
    "oct_add", "oct_add_", "reference_mode", "spatial_pool2x", "split_channels", "upsample_to",
]
