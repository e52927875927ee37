"""Fold eval-mode BatchNorm into the convolution before it (inference only).

In eval mode a BatchNorm is a per-channel affine map, ``y = s * x + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``; applied to a
convolution's output it can be folded into the convolution: weights scaled by ``s`` on
their output channels, bias ``s * b + t``. A folded model computes the same function (up
to float rounding) with one memory pass less per convolution (the BN pass was ~20% of an
I3D forward on the CPU, docs/benchmarks.md). mmaction2 and mmcv call this
``--fuse-conv-bn``; here it is ``TEST.FUSE_CONV_BN`` and ``tools/benchmark.py --fuse-conv-bn``.

For an octave convolution, the high-frequency BN (``bn.h``) scales both paths that write
the high output (h2h and l2h), the low-frequency BN (``bn.l``) both paths that write the
low output (h2l and l2l); its shift becomes the bias of one of them (h2h, and l2l or h2l),
the other path getting a zero bias (``forward_fast`` stacks paths with their biases).

The fused copy is for inference: its BatchNorms are gone (``nn.Identity``), so training it
or loading a checkpoint into it is an error; keep the original model for that.
"""
import copy
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn

from octvideo.layers import OctConv2d, OctConv3d
from octvideo.layers.octave import OctBatchNorm

__all__ = ["fuse_conv_bn", "conv_bn_pairs", "CONV_BN_NAMES"]

_BN = (nn.BatchNorm2d, nn.BatchNorm3d)


# (convolution, its BatchNorm) child names, as the builders name them: stem and shortcut
# (octvideo.models.resnet), bottleneck, Non-local output projection (nonlocal_block).
CONV_BN_NAMES = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("out", "bn"))


def conv_bn_pairs(model: nn.Module) -> Iterator[Tuple[nn.Module, str, str]]:
    """``(parent, conv_name, bn_name)`` of every convolution whose output goes straight into a BatchNorm."""
    for parent in model.modules():
        children = dict(parent.named_children())
        for conv_name, bn_name in CONV_BN_NAMES:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, (nn.Conv2d, nn.Conv3d, OctConv2d, OctConv3d)) and isinstance(bn, (OctBatchNorm,) + _BN):
                yield parent, conv_name, bn_name


def _scale_shift(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError(f"cannot fold {bn}: it has no running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold_into(conv: nn.Module, scale: torch.Tensor, shift: Optional[torch.Tensor]) -> None:
    """conv.weight *= scale (per output channel); conv.bias = scale * bias + shift (or scale * bias)."""
    w = conv.weight.detach()
    conv.weight = nn.Parameter(w * scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype), requires_grad=False)
    bias = conv.bias.detach() * scale if conv.bias is not None else torch.zeros_like(scale)
    if shift is not None:
        bias = bias + shift
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _fold_pair(conv: nn.Module, bn: nn.Module) -> None:
    if isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        if isinstance(bn, OctBatchNorm):
            raise ValueError(f"a plain convolution followed by an octave BatchNorm: {conv} / {bn}")
        _fold_into(conv, *_scale_shift(bn))
        return
    if isinstance(bn, OctBatchNorm):
        high_bn, low_bn = bn.h, bn.l
    else:
        if conv.out_low:
            raise ValueError(f"an octave convolution with a low output followed by a plain BatchNorm: {conv}")
        high_bn, low_bn = bn, None
    if conv.is_plain:
        _fold_into(conv.h2h, *_scale_shift(high_bn))
        return
    s, t = _scale_shift(high_bn)
    _fold_into(conv.h2h, s, t)
    if conv.l2h is not None:
        _fold_into(conv.l2h, s, None)
    if low_bn is not None:
        s, t = _scale_shift(low_bn)
        owner = conv.l2l if conv.l2l is not None else conv.h2l
        for path in (conv.h2l, conv.l2l):
            if path is not None:
                _fold_into(path, s, t if path is owner else None)


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace``) with every conv -> BN pair folded.

    The result is in eval mode. Returns the number of folded pairs as ``model.fused_conv_bn``.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    count = 0
    for parent, conv_name, bn_name in list(conv_bn_pairs(fused)):
        _fold_pair(getattr(parent, conv_name), getattr(parent, bn_name))
        setattr(parent, bn_name, nn.Identity())
        count += 1
    fused.fused_conv_bn = count
    return fused
