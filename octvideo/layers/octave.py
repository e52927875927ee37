"""The octave representation and per-branch helpers.

Every block treats features through these helpers, so splits, pools and residual
adds on ``(high, low)`` pairs are written once. A feature with no low-frequency part is
a plain Tensor; helpers accept both.
"""
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layout import _channels_innermost, _memory_format_of, function_output  # noqa: F401 (also imported from here)
from .pooling import max_pool

OctTensor = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def split_channels(
    channels: int, alpha: float, name: str = "channels", alpha_name: str = "alpha", multiple: int = 1
) -> Tuple[int, int]:
    """``(high, low)`` channel counts: ``low = int(alpha * C)`` as the official code.

    With ``multiple`` M > 1 (``OCT.CHANNEL_MULTIPLE``) and ``alpha > 0``, ``low`` is instead
    ``alpha * C`` rounded to the nearest multiple of M (halves up, at least M), so both
    branches have widths that vector units and tensor cores take whole when C is a multiple
    of M too: at alpha 0.1, C = 64, 128, 256, 512, 1024 give low = 8, 16, 24, 48, 104 instead
    of 6, 12, 25, 51, 102. That is not the published split (its checkpoints do not load), so
    it is opt-in; docs/benchmarks.md ("Aligned octave split") has what it buys.

    Raises ValueError when ``alpha > 0`` leaves either branch empty.
    """
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ValueError(f"channel multiple must be a positive int; got {multiple!r}")
    low = int(alpha * channels)
    if alpha > 0 and multiple > 1:
        low = max(multiple, int(math.floor(alpha * channels / multiple + 0.5)) * multiple)
        if low >= channels:
            raise ValueError(
                f"{alpha_name}={alpha} with {name}={channels} and channel multiple {multiple} leaves the "
                f"high-frequency branch empty (low rounded up to {low}); use a smaller multiple or more channels"
            )
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

    Works for (N, C, H, W) and (N, C, T, H, W); the time axis is untouched. Odd sizes pool
    in ``ceil_mode``, whose border windows divide by the number of valid pixels (with no
    padding the divisor is the window's valid area): the mean of the pixels it has, the same
    numbers as replicate-padding by one pixel first, without writing a padded copy (on res5's
    7x7 maps that copy took longer than the pool). A side of 1 pixel, where ceil-mode
    pooling refuses a kernel larger than the input, is replicate-padded.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h == 1 or w == 1:
        pad = (0, w % 2, 0, h % 2) + ((0, 0) if x.dim() == 5 else ())
        x = F.pad(x, pad, mode="replicate")
        h, w = x.shape[-2], x.shape[-1]
    if x.is_cuda and not (h % 2 or w % 2) and _dense_channels_last(x) and not torch.compiler.is_compiling():
        return block_mean2x(x)
    # ceil_mode always: on even sizes it is the same pool, and a Python constant keeps
    # torch.compile from specialising (or breaking the graph) on the parity of the size.
    ho, wo = (h + 1) // 2, (w + 1) // 2
    if x.dim() == 5:
        # A 2D pool on a 4D view of the same memory: the CPU avg_pool3d kernel has no
        # channels_last_3d path (it returns a contiguous copy), avg_pool2d has one.
        n, c, t = x.shape[:3]
        if _channels_innermost(x):
            y = F.avg_pool2d(x.transpose(1, 2).reshape(n * t, c, h, w), 2, 2, ceil_mode=True)
            return y.view(n, t, c, ho, wo).transpose(1, 2)
        y = F.avg_pool2d(x.reshape(n, c * t, h, w), 2, 2, ceil_mode=True)
        return y.view(n, c, t, ho, wo)
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


def _dense_channels_last(x: torch.Tensor) -> bool:
    return x.dim() in (4, 5) and _channels_innermost(x) and x.is_contiguous(
        memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)


def block_mean2x(x: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_pool2x` of a dense channels-last ``x`` with even H and W, as one mean.

    The memory (N, [T,] H, W, C) viewed as (N T, H/2, 2, W/2, 2, C) and averaged over the two
    size-2 axes: one reduction kernel that reads each input pixel once, output channels last.
    :func:`spatial_pool2x` takes it on CUDA: there PyTorch's channels-last ``avg_pool2d``
    kernel ran at about a sixth of the memory bandwidth, 3.9x slower than this mean (H200,
    32 x 128 x 8 x 56 x 56 fp32: 0.628 against 0.162 ms; docs/benchmarks.md, "Single layers at
    batch 32"). On the CPU ``avg_pool2d``'s channels-last kernel is the faster one.
    """
    n, c, *frames, h, w = x.shape
    t = frames[0] if frames else 1
    y = x.movedim(1, -1).reshape(n * t, h // 2, 2, w // 2, 2, c).mean(dim=(2, 4))
    if frames:
        return y.view(n, t, h // 2, w // 2, c).permute(0, 4, 1, 2, 3)
    return y.view(n, h // 2, w // 2, c).permute(0, 3, 1, 2)


def spatial_mean2x(x: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_pool2x` as the mean of the four strided sub-grids of ``x``.

    Same values. Unlike ``avg_pool`` (and ``F.pad``), autograd saves no input for it, so
    the pooled tensor's memory may be written in place afterwards (``forward_fast`` pools
    a channel slice of a convolution output whose other channels it then updates in
    place); and on a channel slice of channels-last memory it needs no dense copy first.
    """
    # Replicate-pad odd sizes with cat, which saves no input either.
    if x.shape[-2] % 2:
        x = torch.cat([x, x[..., -1:, :]], dim=-2)
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -1:]], dim=-1)
    y = x[..., 0::2, 0::2] + x[..., 1::2, 0::2]
    y += x[..., 0::2, 1::2]
    y += x[..., 1::2, 1::2]
    return dense_like(y.mul_(0.25), x)


def dense_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in dense memory of the layout of ``like`` (channels last or contiguous); no copy if it is.

    Why: a channel slice of a channels-last tensor is not dense, and the CPU batch norm
    turns such an input into a contiguous output, which every later layer then pays for.
    """
    if _channels_innermost(like):
        return t.contiguous(memory_format=torch.channels_last_3d if t.dim() == 5 else torch.channels_last)
    return t.contiguous()


def add_upsampled_(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``high += upsample2x(low)[..., :H, :W]`` in place, without materialising the up-sample.

    Nearest x2 up-sampling repeats each low pixel over a 2x2 block, so the even part of
    ``high`` is viewed as ``(..., H/2, 2, W/2, 2)`` and ``low`` is broadcast over the two
    size-2 axes (paper §3.2: fold the up-sampling into the sum instead of storing it). An
    odd last row / column of ``high`` takes the last low row / column, as cropping the
    up-sampled map does. ``low`` may also have ``H x W`` pixels (nothing to up-sample).
    Returns ``high``. For autograd use :func:`add_upsampled`.
    """
    return _write_upsampled(high, low, "add_")


def add_upsampled(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``high + upsample2x(low)[..., :H, :W]`` as a new tensor in ``high``'s layout (one pass).

    The out-of-place form of :func:`add_upsampled_` for autograd: an in-place add into a
    convolution output that is a view (see ``conv_nd``) would make autograd copy the whole
    gradient several times on the way back. The gradient of ``low`` is the 2x2 block sum
    of the incoming gradient, by a pooling kernel rather than autograd's generic broadcast
    reduction (which was the largest octave overhead of a training step).
    """
    if torch.is_grad_enabled() and (high.requires_grad or low.requires_grad):
        return _AddUpsampled.apply(high, low)
    return _write_upsampled(high.clone(memory_format=_memory_format_of(high)), low, "add_")


def pool2x(x: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_pool2x` with a backward that keeps nothing and writes the gradient directly.

    The backward is the 2x2 up-sampled gradient / 4 (x2 on an odd border, whose pixels the
    replicate padding counted twice), written in the input's memory format; autograd's
    ``avg_pool`` backward is several times slower when the incoming gradient is not in the
    input's layout, and keeps the input alive for nothing. The reference forward and FLOP
    counting use :func:`spatial_pool2x` (plain, traceable operators).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _Pool2x.apply(x)
    return spatial_pool2x(x)


class _AddUpsampled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, high, low):
        ctx.low_size = tuple(low.shape[-2:])
        # (torch.result_type returns no tensor: torch.compile breaks its graph on it)
        dtype = high.dtype if high.dtype == low.dtype else torch.promote_types(high.dtype, low.dtype)
        out = torch.empty(high.shape, dtype=dtype, device=high.device,
                          memory_format=_memory_format_of(high))
        return _write_upsampled(high, low, "add", out=out)

    @staticmethod
    def backward(ctx, grad):
        grad_low = None
        if ctx.needs_input_grad[1]:
            grad_low = grad
            if tuple(grad.shape[-2:]) != ctx.low_size:
                h, w = grad.shape[-2], grad.shape[-1]
                if h % 2 or w % 2:  # zeros outside the map: the block sums of the valid pixels
                    grad_low = F.pad(grad_low, (0, w % 2, 0, h % 2) + ((0, 0) if grad.dim() == 5 else ()))
                grad_low = spatial_pool2x(grad_low) * 4
        return grad, grad_low


class _Pool2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.memory_format = x.shape, _memory_format_of(x)
        return function_output(spatial_pool2x(x))

    @staticmethod
    def backward(ctx, grad):
        return pool2x_grad(grad, ctx.shape, ctx.memory_format)


def pool2x_grad(grad: torch.Tensor, shape: Sequence[int], memory_format: torch.memory_format) -> torch.Tensor:
    """Gradient of :func:`spatial_pool2x` w.r.t. its input of ``shape``, in ``memory_format``.

    Scale the small gradient, then one nearest up-sampling kernel: ~2x faster than writing
    through the broadcast views of _write_upsampled (measured on the res2 gradient of
    Oct-I3D, 231 x 8 x 56 x 56: 1.04 -> 0.48 ms at 2 threads). An odd border's pixels were
    averaged over a window of 2 (or 1), not 4: twice (four times in the corner) the share.
    """
    h, w = shape[-2], shape[-1]
    if grad.is_cuda and not (h % 2 or w % 2) and memory_format != torch.contiguous_format \
            and not torch.compiler.is_compiling():
        # CUDA, channels last, even sizes: one broadcast copy of the scaled gradient into the
        # 2x2 blocks of the output (copy_upsampled_), the counterpart of block_mean2x. There
        # the channels-last nearest up-sampling kernel took 1.7-1.9x as long (H200, 32 x 128 x
        # 8 x 56 x 56 fp32: 0.674 against 0.349 ms; docs/benchmarks.md, "Single layers at
        # batch 32").
        out = torch.empty(tuple(shape), dtype=grad.dtype, device=grad.device, memory_format=memory_format)
        return copy_upsampled_(out, grad * 0.25)
    out = upsample_nearest(grad * 0.25, (h, w)).contiguous(memory_format=memory_format)
    if h % 2:
        out[..., h - 1, :].mul_(2)
    if w % 2:
        out[..., w - 1].mul_(2)
    return out


def upsample_nearest(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest up-sampling of the last two axes to ``size`` = (H, W), H, W in {2h - 1, 2h}.

    Each pixel covers a 2x2 block; an odd last row / column repeats the last pixel once (the
    crop of the x2 up-sample). One ``F.interpolate`` kernel; a 5D tensor in channels_last_3d
    memory goes through the 2D kernel on a (N*T, C, h, w) view of the same memory (the 3D
    kernel has no channels-last path on the CPU) and keeps its layout.
    """
    if x.dim() == 5 and _channels_innermost(x):
        n, c, t, h, w = x.shape
        y = F.interpolate(x.transpose(1, 2).reshape(n * t, c, h, w), size=tuple(size), mode="nearest")
        return y.view(n, t, c, *size).transpose(1, 2)
    if x.dim() == 5:
        return F.interpolate(x, size=(x.shape[2], *size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="nearest")


def write_upsampled_sum(high: torch.Tensor, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[...] = high + upsample2x(low)[..., :H, :W]`` in one pass (``high`` may be a strided view)."""
    return _write_upsampled(high, low, "add", out=out)


def copy_upsampled_(out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``out[...] = upsample2x(low)[..., :H, :W]``, written through the same broadcast views."""
    return _write_upsampled(out, low, "copy_")


def _blocks(t: torch.Tensor) -> torch.Tensor:
    """``t`` (..., H, W), H and W even, viewed as (..., H/2, 2, W/2, 2): the 2x2 blocks of nearest up-sampling."""
    *lead, H, W = t.shape
    *lead_st, sh, sw = t.stride()
    return t.as_strided((*lead, H // 2, 2, W // 2, 2), (*lead_st, 2 * sh, sh, 2 * sw, sw), t.storage_offset())


def _block_broadcast(low: torch.Tensor) -> torch.Tensor:
    """``low`` (..., h, w) viewed as (..., h, 2, w, 2), each pixel repeated over its block (stride 0)."""
    *lead, h, w = low.shape
    *lead_st, sh, sw = low.stride()
    return low.as_strided((*lead, h, 2, w, 2), (*lead_st, sh, 0, sw, 0), low.storage_offset())


def _write_upsampled(high: torch.Tensor, low: torch.Tensor, op: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``high.<op>(up(low))`` through broadcast views; with ``out``: ``out = high + up(low)``."""
    H, W = high.shape[-2], high.shape[-1]
    target = high if out is None else out
    if not (H % 2 or W % 2) and low.shape[-2] * 2 == H and low.shape[-1] * 2 == W and not torch.compiler.is_compiling():
        # Even sizes (every map but res5's 7x7), the common case: the 2x2-block views made
        # with one as_strided each. Same views as the general path below, which builds them
        # by slicing and unflattening: ~4x its Python cost, paid once per octave layer
        # (docs/benchmarks.md, "Dispatch").
        lo = _block_broadcast(low)
        if out is None:
            getattr(_blocks(high), op)(lo)
        else:
            torch.add(_blocks(high), lo, out=_blocks(out))
        return target

    def apply(dst, src, lo):
        if out is None:
            getattr(dst, op)(lo)
        else:
            torch.add(src, lo, out=dst)

    if tuple(low.shape[-2:]) == (H, W):
        apply(target, high, low)
        return target
    if tuple(low.shape[-2:]) != (low_size(H), low_size(W)):
        raise ValueError(f"cannot up-sample a {tuple(low.shape[-2:])} map onto {H}x{W}: expected {low_size(H)}x{low_size(W)}")
    h, w = H // 2, W // 2
    # unflatten of one axis is always a view, even on a cropped (non-contiguous) slice.
    if h and w:
        even = lambda t: t[..., : 2 * h, : 2 * w].unflatten(-1, (w, 2)).unflatten(-3, (h, 2))
        apply(even(target), even(high), low[..., :h, None, :w, None])
    if H % 2 and w:
        row = lambda t: t[..., H - 1, : 2 * w].unflatten(-1, (w, 2))
        apply(row(target), row(high), low[..., h, :w, None])
    if W % 2 and h:
        col = lambda t: t[..., : 2 * h, W - 1].unflatten(-1, (h, 2))
        apply(col(target), col(high), low[..., :h, None, w])
    if H % 2 and W % 2:
        apply(target[..., H - 1, W - 1], high[..., H - 1, W - 1], low[..., h, w])
    return target


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


def oct_add_(a: OctTensor, b: OctTensor) -> OctTensor:
    """:func:`oct_add` into ``a`` (in place, per branch); returns ``a``.

    For the residual add of a block, whose ``a`` is a fresh BN (or, BN folded, convolution)
    output that nothing saved: no new feature map is allocated (at res2 of I3D, 25.7 MB per
    block that the CPU allocator would page-fault in again).
    """
    if is_octave(a) != is_octave(b):
        raise ValueError("residual add of an octave pair and a plain tensor: the shortcut and the branch disagree on alpha")
    if is_octave(a):
        a[0].add_(b[0])
        a[1].add_(b[1])
        return a
    return a.add_(b)


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

    def __init__(self, channels: int, alpha: float, dims: int = 3, channel_multiple: int = 1, **bn_kwargs):
        super().__init__()
        high, low = split_channels(channels, alpha, multiple=channel_multiple)
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        self.h = bn(high, **bn_kwargs)
        self.l = bn(low, **bn_kwargs)

    def forward(self, x: OctTensor) -> OctTensor:
        if not is_octave(x):
            raise ValueError("OctBatchNorm expects a (high, low) pair")
        h, l = self.h, self.l
        if (not (h.training or l.training) and type(h) in _PLAIN_BN and type(l) in _PLAIN_BN
                and h.track_running_stats and l.track_running_stats
                and not (h._forward_hooks or h._forward_pre_hooks or l._forward_hooks or l._forward_pre_hooks)):
            # Eval mode: both branches normalise with their running statistics, as
            # nn.BatchNorm's forward would, called without its two module calls and
            # per-call attribute checks (an octave layer has twice a plain layer's norms;
            # at batch 1 the Python around them was half their time on res4/res5 maps).
            # Branch modules with hooks take the module call, so their hooks run.
            return _bn_eval(h, x[0]), _bn_eval(l, x[1])
        return _bn_train(h, x[0]), _bn_train(l, x[1])


_PLAIN_BN = (nn.BatchNorm2d, nn.BatchNorm3d)

# Training-mode BatchNorm on CUDA of a channels-last feature whose width is not a multiple of 4
# (the official split's low and high widths at alpha 0.1: 6, 25, 51, 58, 102, 231, 461, 922): cuDNN
# runs it with a scalar kernel (vector width 1; I3D's widths get width 4). Viewed as a
# (N*T*H*W, C) matrix, the same memory goes through PyTorch's own BatchNorm kernels instead, at
# half the time on large maps and slower on small ones (H200, batch 32, hundred-and-nineteenth
# session, docs/benchmarks.md). Hence the size gate: at least this many elements. Training only:
# cuDNN's inference kernel has no such penalty (the matrix route made batch-32 a=0.1 inference
# 4% slower). float32 only: cuDNN takes no bfloat16 BatchNorm here (PyTorch's own 5-D kernels
# already run it), and routed under bf16 autocast the eager a=0.1 step ran 1.15-1.3x longer.
_MATRIX_BN_MIN_NUMEL = 1 << 23


def _bn_train(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` in training mode; unaligned, large, float32 channels-last CUDA features take
    :class:`_MatrixBatchNorm` (same numbers, PyTorch's kernels instead of cuDNN's scalar one)."""
    if (x.is_cuda and x.dtype == torch.float32 and x.shape[1] % 4 and x.numel() >= _MATRIX_BN_MIN_NUMEL
            and bn.training
            and type(bn) in _PLAIN_BN and bn.track_running_stats and bn.momentum is not None
            and bn.running_mean is not None and x.dim() == (5 if type(bn) is nn.BatchNorm3d else 4)
            and _dense_channels_last(x) and not (bn._forward_hooks or bn._forward_pre_hooks)
            and not torch.compiler.is_compiling()):
        return matrix_batch_norm(bn, x)
    return bn(x)


def matrix_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode ``bn(x)`` for a dense channels-last ``x``, computed on its memory viewed as a
    (pixels, channels) matrix: the output, the running statistics, ``num_batches_tracked`` and the
    gradients are those of ``bn(x)``, and the output keeps ``x``'s layout."""
    bn.num_batches_tracked.add_(1)
    return _MatrixBatchNorm.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A dense channels-last (N, C, *spatial) tensor as its (N*spatial, C) matrix (a view; a copy
    only if ``t`` is not channels-last, as an incoming gradient may not be)."""
    return t.permute(0, *range(2, t.dim()), 1).reshape(-1, t.shape[1])


def _from_matrix(m: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`_as_matrix`: the (N*spatial, C) matrix ``m`` as a channels-last ``shape``."""
    n, c, *spatial = shape
    return m.view(n, *spatial, c).permute(0, len(shape) - 1, *range(1, len(shape) - 1))


class _MatrixBatchNorm(torch.autograd.Function):
    # A Function returning a tensor of its own (function_output), not views around F.batch_norm:
    # the models' in-place ReLU on a view makes autograd copy every gradient through its
    # view-plus-in-place handling (measured: 33 ms of copies in the a=0.1 step, more than the
    # kernels saved).
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        out, mean, invstd = torch.native_batch_norm(_as_matrix(x), weight, bias, running_mean, running_var,
                                                    True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return function_output(_from_matrix(out, x.shape))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            _as_matrix(grad), _as_matrix(x), weight, None, None, mean, invstd, True, ctx.eps, mask)
        return (None if gx is None else _from_matrix(gx, x.shape)), gw, gb, None, None, None, None


def _bn_eval(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` for an eval-mode BatchNorm with running statistics (what its forward computes)."""
    if x.dim() != (5 if type(bn) is nn.BatchNorm3d else 4):
        bn._check_input_dim(x)  # raises nn.BatchNorm's own error
    p, b = bn._parameters, bn._buffers
    return torch.batch_norm(x, p["weight"], p["bias"], b["running_mean"], b["running_var"], False, 0.0, bn.eps,
                            torch.backends.cudnn.enabled)


def make_norm(channels: int, alpha: float, dims: int = 3, channel_multiple: int = 1, **bn_kwargs) -> nn.Module:
    """BatchNorm for a feature with ``channels`` split by ``alpha`` (plain BN when alpha is 0);
    ``channel_multiple`` as :func:`split_channels`'s ``multiple``."""
    if alpha == 0:
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels, **bn_kwargs)
    return OctBatchNorm(channels, alpha, dims, channel_multiple, **bn_kwargs)


class OctReLU(nn.Module):
    """ReLU on each branch."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: OctTensor) -> OctTensor:
        if is_octave(x):
            relu = torch.relu_ if self.inplace else torch.relu
            return relu(x[0]), relu(x[1])
        return F.relu(x, inplace=self.inplace)


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
        # max_pool: nn.MaxPool3d's numbers, keeping int32 instead of int64 indices for
        # backward and not the input (the ReLU output before it keeps that anyway).
        p = self.pool
        return apply_per_branch(lambda t: max_pool(t, p.kernel_size, p.stride, p.padding, ceil_mode=p.ceil_mode), x)
