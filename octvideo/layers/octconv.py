"""Spatial-only Octave Convolution (paper §3) for 3D (video) and 2D (image) tensors.

An octave feature is a pair ``(high, low)``:

    high: (N, C_h, T, H, W)                 full resolution
    low:  (N, C_l, T, ceil(H/2), ceil(W/2))  half the *spatial* resolution, same frames

Time is never halved: the octave is a spatial idea (paper §4.4 "spatial OctConv").
A feature with no low-frequency part is a plain Tensor.

The module keeps one ``nn.ConvNd`` per path, named ``h2h``, ``h2l``, ``l2h``, ``l2l``,
so the state_dict keys are ``<name>.h2h.weight`` ... each shaped like a plain ConvNd
weight, and only the paths that exist are present. This layout is the public,
stable format of octvideo checkpoints; faster forward implementations must keep it.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .octave import OctTensor, check_octave_sizes, low_size, spatial_pool2x, split_channels

IntOrTuple = Union[int, Sequence[int]]

# When True every OctConv runs :meth:`forward_reference`. FLOP counting uses it so the
# count does not depend on which fast implementation is active (see octvideo/utils/flops.py).
_FORCE_REFERENCE = False


class reference_mode:
    """Context manager: run every OctConv through the plain four-path reference forward."""

    def __enter__(self):
        global _FORCE_REFERENCE
        self._prev, _FORCE_REFERENCE = _FORCE_REFERENCE, True
        return self

    def __exit__(self, *exc):
        global _FORCE_REFERENCE
        _FORCE_REFERENCE = self._prev
        return False


def _as_tuple(value: IntOrTuple, n: int, name: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints; got {value}")
    return value


def _check_alpha(alpha: float, name: str) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha < 1.0):
        raise ValueError(f"{name} must be in [0, 1); got {alpha!r}")


class _OctConvNd(nn.Module):
    """Shared implementation of :class:`OctConv3d` and :class:`OctConv2d`."""

    _dims: int = 3
    _conv_cls = nn.Conv3d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        alpha_in: float = 0.5,
        alpha_out: float = 0.5,
        groups: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        d = self._dims
        _check_alpha(alpha_in, "alpha_in")
        _check_alpha(alpha_out, "alpha_out")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        kernel_size = _as_tuple(kernel_size, d, "kernel_size")
        stride = _as_tuple(stride, d, "stride")
        padding = _as_tuple(padding, d, "padding")
        spatial_stride = stride[-2:]
        if spatial_stride[0] != spatial_stride[1] or spatial_stride[0] not in (1, 2):
            raise ValueError(
                f"spatial stride must be 1 or 2 in both height and width (the octave "
                f"down-samples by 2x2 average pooling); got stride={stride}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.alpha_in, self.alpha_out = float(alpha_in), float(alpha_out)
        self.groups = groups
        self.in_high, self.in_low = split_channels(in_channels, alpha_in, "in_channels", "alpha_in")
        self.out_high, self.out_low = split_channels(out_channels, alpha_out, "out_channels", "alpha_out")
        self.is_plain = self.in_low == 0 and self.out_low == 0
        # A plain conv (alpha 0 -> 0) is exactly nn.ConvNd, strided conv included. With an
        # octave on either side, spatial stride 2 is a 2x2 average pool followed by a
        # stride-1 conv (official layout; strided convs misalign octaves, paper Table 3).
        self.downsample = spatial_stride[0] == 2 and not self.is_plain
        conv_stride = stride if not self.downsample else stride[:-2] + (1, 1)
        self._conv_stride = conv_stride

        self.depthwise = groups > 1 and groups == in_channels == out_channels
        if self.depthwise and self.in_low != self.out_low:
            raise ValueError(
                f"depthwise OctConv needs the same split on both sides; alpha_in={alpha_in} gives "
                f"{self.in_low} low input channels but alpha_out={alpha_out} gives {self.out_low}"
            )

        def make(cin: int, cout: int, path: str) -> Optional[nn.Module]:
            if cin == 0 or cout == 0:
                return None
            g = cin if self.depthwise else groups
            if cin % g or cout % g:
                raise ValueError(
                    f"path {path} has {cin} input and {cout} output channels, not divisible by "
                    f"groups={groups} (in_channels={in_channels}, out_channels={out_channels}, "
                    f"alpha_in={alpha_in}, alpha_out={alpha_out})"
                )
            return self._conv_cls(cin, cout, kernel_size, conv_stride, padding, groups=g, bias=bias)

        self.h2h = make(self.in_high, self.out_high, "h2h")
        self.l2l = make(self.in_low, self.out_low, "l2l")
        if self.depthwise:  # paper §3.3: depthwise OctConv has no inter-frequency paths
            self.h2l = self.l2h = None
        else:
            self.h2l = make(self.in_high, self.out_low, "h2l")
            self.l2h = make(self.in_low, self.out_high, "l2h")

    @property
    def paths(self) -> Tuple[str, ...]:
        """Names of the paths that exist, e.g. ``("h2h", "h2l")``."""
        return tuple(p for p in ("h2h", "h2l", "l2h", "l2l") if getattr(self, p) is not None)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, alpha_in={self.alpha_in}, "
            f"alpha_out={self.alpha_out}, groups={self.groups}, paths={self.paths}"
        )

    # ------------------------------------------------------------------ input checks
    def _split_input(self, x: OctTensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        rank = self._dims + 2
        if self.in_low == 0:
            if not isinstance(x, torch.Tensor):
                raise ValueError(
                    f"{type(self).__name__} with alpha_in=0 expects a Tensor, got {type(x).__name__}"
                )
            high, low = x, None
        else:
            if not (isinstance(x, (tuple, list)) and len(x) == 2):
                raise ValueError(
                    f"{type(self).__name__} with alpha_in={self.alpha_in} expects a (high, low) "
                    f"tuple, got {type(x).__name__}"
                )
            high, low = x
        if high.dim() != rank:
            raise ValueError(f"high input must have rank {rank} (N, C, {'T, ' if rank == 5 else ''}H, W); got shape {tuple(high.shape)}")
        if high.shape[1] != self.in_high:
            raise ValueError(
                f"high input has {high.shape[1]} channels; expected {self.in_high} "
                f"(in_channels={self.in_channels}, alpha_in={self.alpha_in})"
            )
        if low is not None:
            if low.dim() != rank:
                raise ValueError(f"low input must have rank {rank}; got shape {tuple(low.shape)}")
            if low.shape[1] != self.in_low:
                raise ValueError(
                    f"low input has {low.shape[1]} channels; expected {self.in_low} "
                    f"(in_channels={self.in_channels}, alpha_in={self.alpha_in})"
                )
            check_octave_sizes(high, low)
        return high, low

    def _pack_output(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        return high if low is None else (high, low)

    # ------------------------------------------------------------------ forward
    def forward(self, x: OctTensor) -> OctTensor:
        high, low = self._split_input(x)
        if self.is_plain:
            return self.h2h(high)
        return self.forward_reference(high, low)

    def forward_reference(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        """Straightforward four-path OctConv (paper eq. 4). Slow; kept as the numerical reference."""
        if self.downsample:
            high = spatial_pool2x(high)
            if low is not None:
                low = spatial_pool2x(low)
        y_high = y_low = None
        if self.h2h is not None:
            y_high = self.h2h(high)
        if self.h2l is not None:
            y_low = self.h2l(spatial_pool2x(high))
        if self.l2l is not None:
            y = self.l2l(low)
            y_low = y if y_low is None else y_low + y
        if self.l2h is not None:
            y = self.l2h(low)
            if y_high is None:
                raise AssertionError("unreachable: l2h exists only when out_high > 0")
            y_high = y_high + upsample_to(y, y_high.shape[-2:])
        return self._pack_output(y_high, y_low)


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest x2 spatial up-sampling of ``x`` cropped to spatial ``size`` (odd sizes)."""
    h, w = int(size[0]), int(size[1])
    if x.shape[-2:] == (h, w):  # stride-2 l2h: the low input already has the output's size
        return x
    y = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return y[..., :h, :w]


class OctConv3d(_OctConvNd):
    """3D Octave Convolution with spatial-only octaves.

    ``OctConv3d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    alpha_in=0.5, alpha_out=0.5, groups=1, bias=False)``

    Input: a Tensor ``(N, C, T, H, W)`` when ``alpha_in == 0``, else ``(high, low)``.
    Output: ``(high, low)``, or a Tensor when ``alpha_out == 0``. Channels split as
    the official code: ``low = int(alpha * C)``, ``high = C - low``.
    """

    _dims = 3
    _conv_cls = nn.Conv3d


class OctConv2d(_OctConvNd):
    """2D Octave Convolution (ImageNet Oct-ResNet); same contract as :class:`OctConv3d`."""

    _dims = 2
    _conv_cls = nn.Conv2d
