"""One ResNet builder for ResNet / Oct-ResNet (2D) and C2D / I3D / +NL and their Oct versions (3D).

Layout (official Oct-ResNet, torchvision post-activation bottleneck)::

    stem:  conv kxk (plain, never octave) -> BN -> ReLU -> max pool      (N, W, T, H/4, W/4)
    res2:  blocks at alpha; block 0 takes a plain input (conv1/shortcut alpha_in = 0)
    [temporal max pool 2x1x1 after res2 for video rows]
    res3, res4: blocks at alpha; the first block strides by 2 on its 3x3 conv
    res5:  blocks at alpha 0; block 0's conv1 and shortcut take alpha -> 0
    head:  global average pool (any input size) -> dropout -> linear

Feature widths (WIDTH = 64 for ResNet-50): stem W, stage s inner 2^s W, output 4 * 2^s W.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from octvideo.layers import MaxPoolReLU, OctConv2d, OctConv3d, OctMaxPool3d, OctReLU, OctTensor, make_norm, oct_add_
from octvideo.layers.octave import apply_per_branch

from .arch import STAGE_DEPTHS, ArchSpec
from .nonlocal_block import make_nonlocal


def _conv(dims: int, *args, **kwargs) -> nn.Module:
    return (OctConv3d if dims == 3 else OctConv2d)(*args, **kwargs)


def _k(dims: int, t: int, s: int):
    """A kernel/stride/padding tuple: (t, s, s) in 3D, (s, s) in 2D."""
    return (t, s, s) if dims == 3 else (s, s)


class Stem(nn.Module):
    """Plain (never octave) stem: conv kernel stride (1,)2,2 -> BN -> ReLU -> 3x3 max pool stride 2.

    The ReLU and the max pool run as one :class:`MaxPoolReLU` (pool first, then ReLU: same
    values and gradients, and backward keeps only the pool's indices, not the full-resolution
    ReLU output; see octvideo/layers/pooling.py).
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int]):
        super().__init__()
        pad = tuple(k // 2 for k in kernel)
        if dims == 3:
            self.conv = nn.Conv3d(in_channels, out_channels, kernel, (1, 2, 2), pad, bias=False)
            self.bn = nn.BatchNorm3d(out_channels)
            self.pool = MaxPoolReLU((1, 3, 3), (1, 2, 2), (0, 1, 1))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, 2, pad, bias=False)
            self.bn = nn.BatchNorm2d(out_channels)
            self.pool = MaxPoolReLU((3, 3), (2, 2), (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Post-activation bottleneck with octave convolutions.

    conv1: kt x 1 x 1, alpha_in -> alpha;  conv2: 1 x 3 x 3, stride s;  conv3: 1 x 1 x 1.
    Shortcut: 1 x 1 x 1 projection (stride s) when the width or stride changes.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        stride: int,
        temporal_kernel: int,
        alpha_in: float,
        alpha: float,
        channel_multiple: int = 1,
    ):
        super().__init__()
        m = channel_multiple
        self.conv1 = _conv(
            dims, in_channels, inner_channels, _k(dims, temporal_kernel, 1), 1,
            _k(dims, temporal_kernel // 2, 0), alpha_in=alpha_in, alpha_out=alpha, channel_multiple=m,
        )
        self.bn1 = make_norm(inner_channels, alpha, dims, m)
        self.conv2 = _conv(
            dims, inner_channels, inner_channels, _k(dims, 1, 3), _k(dims, 1, stride), _k(dims, 0, 1),
            alpha_in=alpha, alpha_out=alpha, channel_multiple=m,
        )
        self.bn2 = make_norm(inner_channels, alpha, dims, m)
        self.conv3 = _conv(
            dims, inner_channels, out_channels, 1, 1, 0, alpha_in=alpha, alpha_out=alpha, channel_multiple=m
        )
        self.bn3 = make_norm(out_channels, alpha, dims, m)
        # Zero-init of bn3's gamma is a training recipe choice; we keep the PyTorch default
        # so random models are not trivially identity (tests rely on non-trivial outputs).
        self.relu = OctReLU(inplace=True)
        if stride != 1 or in_channels != out_channels or alpha_in != alpha:
            self.shortcut = nn.Module()
            self.shortcut.conv = _conv(
                dims, in_channels, out_channels, 1, _k(dims, 1, stride), 0, alpha_in=alpha_in, alpha_out=alpha,
                channel_multiple=m,
            )
            self.shortcut.bn = make_norm(out_channels, alpha, dims, m)
        else:
            self.shortcut = None

    def forward(self, x: OctTensor) -> OctTensor:
        identity = x if self.shortcut is None else self.shortcut.bn(self.shortcut.conv(x))
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        # In place: y is a fresh BN (or folded convolution) output that nothing saved.
        return self.relu(oct_add_(y, identity))


class ResStage(nn.Module):
    """``depth`` bottlenecks, the first one changing width/stride/alpha, with optional Non-local blocks."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        stride: int,
        temporal_kernels: Sequence[int],
        alpha_in: float,
        alpha: float,
        nonlocal_after: Sequence[int] = (),
        channel_multiple: int = 1,
    ):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i, kt in enumerate(temporal_kernels):
            self.blocks.append(
                Bottleneck(
                    dims, in_channels if i == 0 else out_channels, inner_channels, out_channels,
                    stride if i == 0 else 1, kt, alpha_in if i == 0 else alpha, alpha, channel_multiple,
                )
            )
        self.nonlocals = nn.ModuleDict(
            {str(i): make_nonlocal(out_channels, alpha, channel_multiple) for i in nonlocal_after}
        )

    def forward(self, x: OctTensor) -> OctTensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            key = str(i)
            if key in self.nonlocals:
                x = self.nonlocals[key](x)
        return x


class Head(nn.Module):
    """Global average pool over every axis but channels (any input size) -> dropout -> linear."""

    def __init__(self, in_channels: int, num_classes: int, dropout_rate: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.proj = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).mean(-1)
        return self.proj(self.dropout(x))


class ResNet(nn.Module):
    """ResNet family built from an :class:`ArchSpec` row; see the module docstring for the layout."""

    def __init__(
        self,
        arch: ArchSpec,
        depth: int = 50,
        alpha: float = 0.0,
        width: int = 64,
        num_classes: int = 400,
        dropout_rate: float = 0.5,
        in_channels: int = 3,
        channel_multiple: int = 1,
    ):
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise ValueError(f"MODEL.DEPTH={depth} is not one of {sorted(STAGE_DEPTHS)}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"OCT.ALPHA must be in [0, 1); got {alpha}")
        self.arch, self.depth, self.alpha, self.width = arch, depth, alpha, width
        self.channel_multiple = channel_multiple
        self.dims, self.in_channels, self.num_classes = arch.dims, in_channels, num_classes
        dims = arch.dims
        self.stem = Stem(dims, in_channels, width, arch.stem_kernel)
        stage_alphas = (alpha, alpha, alpha, 0.0)  # res5 is never octave (official layout)
        feature_in, alpha_in = width, 0.0
        self.stage_names: List[str] = []
        for s, n_blocks in enumerate(STAGE_DEPTHS[depth]):
            inner = width * 2**s
            stage = ResStage(
                dims, feature_in, inner, 4 * inner, 1 if s == 0 else 2,
                arch.stage_temporal_kernels(s, n_blocks), alpha_in, stage_alphas[s],
                arch.stage_nonlocal(s, n_blocks), channel_multiple,
            )
            name = f"res{s + 2}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            if s == 0 and dims == 3 and arch.pool1_temporal > 1:
                t = arch.pool1_temporal
                self.pool1 = OctMaxPool3d((t, 1, 1), (t, 1, 1))
            feature_in, alpha_in = 4 * inner, stage_alphas[s]
        self.head = Head(feature_in, num_classes, dropout_rate)
        self.num_features = feature_in
        _init_weights(self)

    def _check_input(self, x: torch.Tensor) -> None:
        rank = self.dims + 2
        expected = "(N, C, T, H, W)" if self.dims == 3 else "(N, C, H, W)"
        if not isinstance(x, torch.Tensor) or x.dim() != rank or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected input of shape {expected} with C={self.in_channels}; got {got}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name == "res2" and hasattr(self, "pool1"):
                x = self.pool1(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, small linear (PySlowFast / torchvision conventions)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            if not getattr(m, "zero_init", False):
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
