"""Max pooling that keeps less for backward: the stem's ReLU + max pool, and the temporal pool.

PyTorch's max pool keeps, for backward, its whole input and int64 indices of its output.
In a ResNet stem (conv -> BN -> ReLU -> 3x3 max pool, stride 2) that input is the ReLU output
at full stem resolution, which nothing else needs for backward: for an 8x224x224 I3D clip,
25.7 MB of input and 12.8 MB of indices, 7% of everything the network keeps.

:class:`MaxPoolReLU` (``max_pool(..., relu=True)``) pools *before* the ReLU (max and ReLU
commute: both are monotonic, so ``relu(max(window)) == max(relu(window))`` with the same
arg-max) and keeps only the indices, as int32, and its output, which the next layer keeps
anyway. Backward masks the gradient by the output (ReLU's own backward kernel) and scatters
it with PyTorch's own max-pool backward kernel. Forward values and gradients equal
``max_pool(relu(x))``'s (tests/test_pooling.py); the ReLU also runs on a quarter of the
elements. :func:`max_pool` is the same without the ReLU; for the temporal pool after res2
(frame pairs) it keeps a 1-byte mask, not int64 indices nor its input (the ReLU output that
the block before keeps anyway).
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layout import _memory_format_of


def _triple(v, n: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode, relu):
        dims = x.dim() - 2
        pool = F.max_pool3d if dims == 3 else F.max_pool2d
        y, idx = pool(x, kernel, stride, padding, 1, ceil_mode, return_indices=True)
        if relu:
            y.relu_()
        # Indices address one (T, H, W) plane: int32 holds them (planes < 2^31 elements).
        plane = x[0, 0].numel()
        ctx.idx_dtype = torch.int32 if plane < 2**31 else torch.int64
        ctx.args = (kernel, stride, padding, ceil_mode, relu)
        ctx.input_meta = (x.shape, x.dtype, x.device, _memory_format_of(x))
        ctx.save_for_backward(idx.to(ctx.idx_dtype), y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        idx, y = ctx.saved_tensors
        kernel, stride, padding, ceil_mode, relu = ctx.args
        shape, dtype, device, fmt = ctx.input_meta
        if relu:  # ReLU's backward on its output (``where`` would be ~7x slower on the CPU)
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        # The backward kernels read only the input's sizes and layout, never its values:
        # an uninitialised tensor of that shape stands in for the input we did not keep.
        like = torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)
        if len(shape) == 5:
            gx = torch.ops.aten.max_pool3d_with_indices_backward(
                grad.contiguous(memory_format=fmt), like, kernel, stride, padding, [1, 1, 1], ceil_mode, idx.long())
        else:
            gx = torch.ops.aten.max_pool2d_with_indices_backward(
                grad.contiguous(memory_format=fmt), like, kernel, stride, padding, [1, 1], ceil_mode, idx.long())
        return gx, None, None, None, None, None


def _temporal_max2(x: torch.Tensor) -> torch.Tensor:
    """Max over frame pairs (kernel = stride = (2, 1, 1), ceil mode) as one elementwise maximum.

    Also the inference form: PyTorch's CPU ``max_pool3d`` computes int64 indices even when
    none are asked for, and took 2.1x this time on an I3D res2 output (256 x 8 x 56 x 56,
    channels-last, 2 threads: 1.40 against 0.65 ms). Same values, NaN included (both
    propagate it).
    """
    t = x.shape[2]
    y = torch.empty((*x.shape[:2], (t + 1) // 2, *x.shape[3:]), dtype=x.dtype, device=x.device,
                    memory_format=_memory_format_of(x))
    torch.maximum(x[:, :, 0 : t - 1 : 2], x[:, :, 1::2], out=y[:, :, : t // 2])
    if t % 2:  # ceil mode: the last frame alone
        y[:, :, -1].copy_(x[:, :, -1])
    return y


class _TemporalMax2(torch.autograd.Function):
    """Max over frame pairs (kernel = stride = (2, 1, 1), ceil mode), keeping a 1-byte mask.

    The arg-max of a pair is one bit, so backward needs neither the input nor int64
    indices, and writes the gradient in one pass (no zero fill, no scatter). Ties pick the
    first frame, as PyTorch's kernel does. Masking is a multiply (PyTorch's CPU ``where`` /
    ``masked_fill`` on bool masks are ~7x slower here): a NaN or infinite incoming gradient
    therefore gives NaN to both frames, and with NaN inputs the values agree with
    ``max_pool3d`` but the gradient may go to the other frame (a run that has diverged).
    """

    @staticmethod
    def forward(ctx, x):
        t = x.shape[2]
        even, odd = x[:, :, 0 : t - 1 : 2], x[:, :, 1::2]
        ctx.shape, ctx.fmt = x.shape, _memory_format_of(x)
        ctx.save_for_backward(odd > even)
        return _temporal_max2(x)

    @staticmethod
    def backward(ctx, grad):
        (second,) = ctx.saved_tensors
        t = ctx.shape[2]
        gx = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.fmt)
        g = grad[:, :, : t // 2]
        odd = torch.mul(g, second, out=gx[:, :, 1::2])
        torch.sub(g, odd, out=gx[:, :, 0 : t - 1 : 2])  # g - g = 0, g - 0 = g
        if t % 2:
            gx[:, :, -1].copy_(grad[:, :, -1])
        return gx


def max_pool(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int] = 0,
             ceil_mode: bool = False, relu: bool = False) -> torch.Tensor:
    """``max_poolNd(x)`` (``relu(max_poolNd(x))`` with ``relu``) keeping only int32 indices for backward."""
    n = x.dim() - 2
    kernel, stride, padding = _triple(kernel, n), _triple(stride, n), _triple(padding, n)
    # Traced (fvcore's FLOP count) or compiled (torch.compile decides what to keep itself, and
    # Dynamo does not trace writes into strided out= views): PyTorch's operators.
    eager = not torch.jit.is_tracing() and not torch.compiler.is_compiling()
    pairs = n == 3 and kernel == stride == (2, 1, 1) and padding == (0, 0, 0) and ceil_mode and not relu
    if eager and torch.is_grad_enabled() and x.requires_grad:
        if pairs:
            return _TemporalMax2.apply(x)
        return _MaxPool.apply(x, list(kernel), list(stride), list(padding), ceil_mode, relu)
    if eager and pairs:
        return _temporal_max2(x)
    pool = F.max_pool3d if n == 3 else F.max_pool2d
    y = pool(x, kernel, stride, padding, 1, ceil_mode)
    return y.relu_() if relu else y


class MaxPoolReLU(nn.Module):
    """``ReLU`` then ``MaxPool{2,3}d`` (the ResNet stem's), computed as max pool then ReLU (see module doc)."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = 0, relu: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.relu = tuple(kernel_size), tuple(stride), tuple(padding), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool(x, self.kernel_size, self.stride, self.padding, relu=self.relu)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, relu={self.relu}"
