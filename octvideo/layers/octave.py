"""The octave representation and per-branch helpers.

Every block treats features through these helpers, so splits, pools and residual
adds on ``(high, low)`` pairs are written once. A feature with no low-frequency part is
a plain Tensor; helpers accept both.
"""
import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

OctTensor = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def split_channels(channels: int, alpha: float, name: str = "channels", alpha_name: str = "alpha") -> Tuple[int, int]:
    """``(high, low)`` channel counts as the official code: ``low = int(alpha * C)``.

    Raises ValueError when ``alpha > 0`` leaves the low branch empty.
    """
    low = int(alpha * channels)
    high = channels - low
    if alpha > 0 and low == 0:
        raise ValueError(
            f"{alpha_name}={alpha} with {name}={channels} leaves the low-frequency branch empty "
            f"(int({alpha} * {channels}) = 0); use more channels or alpha=0"
        )
    if high == 0:
        raise ValueError(f"{alpha_name}={alpha} with {name}={channels} leaves the high-frequency branch empty")
    return high, low


def low_size(size: int) -> int:
    """Spatial size of the low octave for a high size (ceil for odd sizes)."""
    return (int(size) + 1) // 2


def check_octave_sizes(high: torch.Tensor, low: torch.Tensor) -> None:
    """Raise ValueError unless ``low`` has the frames of ``high`` and half its H, W (ceil)."""
    expected = tuple(high.shape[2:-2]) + (low_size(high.shape[-2]), low_size(high.shape[-1]))
    if tuple(low.shape[2:]) != expected or low.shape[0] != high.shape[0]:
        raise ValueError(
            f"low input of shape {tuple(low.shape)} does not match high input of shape "
            f"{tuple(high.shape)}: expected batch {high.shape[0]} and sizes {expected} "
            f"(same frames, ceil(H/2) x ceil(W/2))"
        )


def spatial_pool2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 spatial average pool, stride 2; an odd border averages only the pixels it has.

    Works for (N, C, H, W) and (N, C, T, H, W); the time axis is untouched. Odd sizes are
    replicate-padded by one pixel first, which gives exactly the mean of the valid pixels of
    each border window (what ``ceil_mode=True`` computes) and also works for 1x1 maps,
    where ceil-mode pooling refuses a kernel larger than the input.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h % 2 or w % 2:
        pad = (0, w % 2, 0, h % 2) + ((0, 0) if x.dim() == 5 else ())
        x = F.pad(x, pad, mode="replicate")
    if x.dim() == 5:
        return F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
    return F.avg_pool2d(x, 2, 2)


def is_octave(x: OctTensor) -> bool:
    return isinstance(x, (tuple, list))


def apply_per_branch(fn: Callable[[torch.Tensor], torch.Tensor], x: OctTensor) -> OctTensor:
    """Apply a per-tensor function to each branch (parameter-free ops: ReLU, pools)."""
    if is_octave(x):
        return fn(x[0]), fn(x[1])
    return fn(x)


def oct_add(a: OctTensor, b: OctTensor) -> OctTensor:
    """Residual add per branch; both sides must have the same octave structure."""
    if is_octave(a) != is_octave(b):
        raise ValueError("residual add of an octave pair and a plain tensor: the shortcut and the branch disagree on alpha")
    if is_octave(a):
        return a[0] + b[0], a[1] + b[1]
    return a + b


def oct_shapes(x: OctTensor):
    """Shapes of a feature, for error messages and tests."""
    if is_octave(x):
        return tuple(x[0].shape), tuple(x[1].shape)
    return tuple(x.shape)


class OctBatchNorm(nn.Module):
    """One batch norm per branch (``h`` and ``l``), as the official Oct-ResNet.

    With ``alpha == 0`` use a plain BatchNorm instead (see :func:`make_norm`), so vanilla
    models keep vanilla state_dict keys.
    """

    def __init__(self, channels: int, alpha: float, dims: int = 3, **bn_kwargs):
        super().__init__()
        high, low = split_channels(channels, alpha)
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        self.h = bn(high, **bn_kwargs)
        self.l = bn(low, **bn_kwargs)

    def forward(self, x: OctTensor) -> OctTensor:
        if not is_octave(x):
            raise ValueError("OctBatchNorm expects a (high, low) pair")
        return self.h(x[0]), self.l(x[1])


def make_norm(channels: int, alpha: float, dims: int = 3, **bn_kwargs) -> nn.Module:
    """BatchNorm for a feature with ``channels`` split by ``alpha`` (plain BN when alpha is 0)."""
    if alpha == 0:
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels, **bn_kwargs)
    return OctBatchNorm(channels, alpha, dims, **bn_kwargs)


class OctReLU(nn.Module):
    """ReLU on each branch."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: OctTensor) -> OctTensor:
        return apply_per_branch(lambda t: F.relu(t, inplace=self.inplace), x)


class OctMaxPool3d(nn.Module):
    """A (temporal) max pool applied to each branch.

    Only pools that leave H and W alone (kernel and stride 1 spatially) keep the
    octave sizes consistent; spatial pools are rejected.
    """

    def __init__(self, kernel_size, stride, padding=0):
        super().__init__()
        # ceil_mode: a clip shorter than the kernel (T=1) still gives one frame; for the
        # even clip lengths of the published models (T=8) it changes nothing.
        self.pool = nn.MaxPool3d(kernel_size, stride, padding, ceil_mode=True)
        ks = self.pool.kernel_size if isinstance(self.pool.kernel_size, tuple) else (self.pool.kernel_size,) * 3
        st = self.pool.stride if isinstance(self.pool.stride, tuple) else (self.pool.stride,) * 3
        if tuple(ks[1:]) != (1, 1) or tuple(st[1:]) != (1, 1):
            raise ValueError(f"OctMaxPool3d pools time only; got kernel_size={kernel_size}, stride={stride}")

    def forward(self, x: OctTensor) -> OctTensor:
        return apply_per_branch(self.pool, x)
