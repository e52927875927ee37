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
import contextlib
import math
import weakref
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .octave import OctTensor, _channels_innermost, _memory_format_of, function_output, add_upsampled, add_upsampled_, check_octave_sizes, copy_upsampled_, pool2x, pool2x_grad, spatial_mean2x, spatial_pool2x, split_channels, upsample_nearest, write_upsampled_sum

IntOrTuple = Union[int, Sequence[int]]

# When True every OctConv runs :meth:`forward_reference`. FLOP counting uses it so the
# count does not depend on which fast implementation is active (see octvideo/utils/flops.py).
_FORCE_REFERENCE = False

# Cost model of the inference strategies of forward_fast, per device type: how many
# multiply-adds cost as much as streaming one element through memory once (read + write).
# Only the choice between exact formulations depends on it, and forward_fast makes that
# choice for the device its input is on (OctConv3d.inference_strategies).
# - "cpu": fitted to the layer timings on the 2-core CPU of docs/benchmarks.md with 2
#   threads (oneDNN ~200 GMAC/s, ~5 G element-passes/s). Any device type not listed uses it.
# - "cuda": fitted to whole Oct-I3D inference calls on an H200 at batch 32 (fp32,
#   channels_last_3d, eager; hundredth session, docs/benchmarks.md "CUDA"). The 1x1
#   convolutions there are bound by memory traffic, so a multiply-add is nearly free next
#   to a pass over memory: of 10, 40, 160 and 1000, 1000 was fastest (a=0.5 27.35 ms
#   against 28.30 at the CPU's 40, a=0.1 42.58 against 43.62; I3D 27.44).
#   The compiled forward (forward_traceable) keeps the "cpu" choice: inductor fuses the
#   pools and adds this model prices. Measured compiled on the H200 at batch 32 (hundred-
#   and-twelfth session), the "cuda" choice was slower at a=0.5 (20.5 against 19.9 ms)
#   and faster at a=0.1 (29.8 against 30.6 ms), so neither value fits compiled code better.
_MACS_PER_PASS = {"cpu": 40, "cuda": 1000}
# oneDNN's fp32 kernels on AVX-512 compute output channels in blocks of 16 (an h2h path of
# 58 outputs costs 64): output channels that fill a partial block are nearly free
# (docs/benchmarks.md, "channel blocks"). Used by the training stacking rule below.
_CHANNEL_BLOCK = 16


def _strategy_property(name: str) -> property:
    """An OctConv3d attribute over ``inference_strategies``: reads the CPU's choice, writes every device's."""

    def get(self) -> bool:
        return self.inference_strategies["cpu"][name]

    def set(self, value: bool) -> None:
        for plan in self.inference_strategies.values():
            plan[name] = bool(value)

    return property(get, set, doc=f"Inference strategy {name!r} (see OctConv3d.forward_fast): the CPU's choice; "
                                  "setting it forces it on every device.")


def _blocked(channels: int) -> int:
    return -(-channels // _CHANNEL_BLOCK) * _CHANNEL_BLOCK


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
        channel_multiple: int = 1,
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
        self.channel_multiple = channel_multiple
        self.in_high, self.in_low = split_channels(in_channels, alpha_in, "in_channels", "alpha_in", channel_multiple)
        self.out_high, self.out_low = split_channels(out_channels, alpha_out, "out_channels", "alpha_out", channel_multiple)
        self.is_plain = self.in_low == 0 and self.out_low == 0
        # A plain conv (alpha 0 -> 0) is nn.ConvNd's convolution, strided conv included. With an
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

        # Inference strategies of forward_fast. Stacking paths' weights is only valid with
        # groups == 1 (with groups the stacked channels would land in other groups), and
        # moving a pool or an up-sample across a convolution only for kernels that are
        # 1x1 in space (then the two commute).
        # (With spatial stride 2, l2h reads the un-pooled low input and l2l the pooled one.)
        self.stack_low_paths = groups == 1 and self.l2h is not None and self.l2l is not None and not self.downsample
        pointwise = groups == 1 and kernel_size[-2:] == (1, 1) and padding[-2:] == (0, 0) and conv_stride[-2:] == (1, 1)
        kt = math.prod(kernel_size[:-2])
        ih, il, oh, ol = self.in_high, self.in_low, self.out_high, self.out_low

        def inference_strategies(m: float) -> Dict[str, bool]:
            # Per high-resolution output pixel: what the strategy saves > what it adds.
            upsample_before_l2h = (
                pointwise and self.l2h is not None
                # saves the add of the up-sampled l2h output into the high output (2.25 oh);
                # adds l2h at full resolution and writing / pooling [high, up(low)]
                and m * 2.25 * oh > 0.75 * kt * il * oh + m * (2 * ih + 2.5 * il)
            )
            pool_after_h2l = (
                pointwise and self.h2l is not None and not upsample_before_l2h
                # saves pooling the high input (1.25 ih); adds h2l at full resolution, pooling
                # its output and a dense copy of the h2h part of the stacked output
                and m * 1.25 * ih > 0.75 * kt * ih * ol + m * (1.25 * ol + 2 * oh)
            )
            return {"upsample_before_l2h": upsample_before_l2h, "pool_after_h2l": pool_after_h2l}

        # Device type -> the two pointwise inference strategies that pay there (read by
        # forward_fast for its input's device; the properties of the same names give the
        # CPU's choice and force one for every device).
        self.inference_strategies = {dev: inference_strategies(m) for dev, m in _MACS_PER_PASS.items()}
        # Spatial stride 2: h2h and l2h both read maps at the output's resolution (the pooled
        # high input, the un-pooled low one) and h2l, l2l the same maps pooled once more, so
        # the layer is two convolutions over stacked inputs, [pool(high), low] and its pooled
        # copy, for any kernel: no up-sampling, no adds (_forward_joined).
        self.join_strided = self.downsample and groups == 1 and self.h2h is not None and self.l2h is not None
        # Under autograd (training): h2l stacked with h2h (see _stacked_for_autograd) when it
        # pays, per high-resolution pixel: it saves pooling the high input forward and again
        # backward, up-sampling its gradient and adding it into h2h's (~6.5 ih passes); it
        # adds h2l's multiply-adds at full resolution (forward + backward, 3 x 0.75 kt ih per
        # output channel) for the output channels the stacking adds in oneDNN's blocks (at
        # alpha 0.1, 58 + 6 channels are one block of 64, as 58 alone: nearly free), weighted
        # 4x, and copying h2h's output apart and concatenating the two gradients (~2 oh + 3 ol).
        # Fitted to whole Oct-I3D training steps (2026-11-29, docs/benchmarks.md; on the CPU,
        # for every device: GPU training steps were bound by the host): stacking
        # pays for the 4w -> w layers at alpha 0.1, where the added channels fill a partial
        # block, and costs 4% of an alpha 0.25 step, where they do not; not for w -> 4w layers.
        m = _MACS_PER_PASS["cpu"]
        added = _blocked(oh + ol) - _blocked(oh)
        stack_saving = m * 6.5 * ih - (4 * 2.25 * kt * ih * added + m * (2 * oh + 3 * ol))
        self.pointwise_h2l = pointwise and self.h2l is not None and self.h2h is not None and stack_saving > 0
        # Per call it also concatenates the two weights, forward and backward (~2 passes over
        # kt ih (oh + ol) elements), which on small maps outweighs the per-pixel saving (res5
        # 2048 -> 512 at alpha 0.1 on 4x7x7: 7.5 ms stacked against 6.6 ms for the naive form;
        # res4 1024 -> 256 at alpha 0.1 stacks from 221 pixels: its 4x14x14 maps, not 4x7x7).
        # Below this many high-resolution pixels (N T H W) the paths run separately.
        self.pointwise_h2l_min_pixels = 2 * m * kt * ih * (oh + ol) / stack_saving if stack_saving > 0 else math.inf

    def _inference_strategy(self, device: torch.device) -> Dict[str, bool]:
        return self.inference_strategies.get(device.type) or self.inference_strategies["cpu"]

    # The pointwise inference strategies (see forward_fast): reading one gives the CPU's
    # choice; setting one forces it on every device.
    upsample_before_l2h = _strategy_property("upsample_before_l2h")
    pool_after_h2l = _strategy_property("pool_after_h2l")

    def __getstate__(self):
        # The inference cache of stacked weights (_merged_weights) is derived state: copies
        # (deepcopy, fuse_conv_bn) and pickles rebuild it instead of carrying it.
        state = super().__getstate__()
        state.pop("_merged_cache", None)
        return state

    @property
    def paths(self) -> Tuple[str, ...]:
        """Names of the paths that exist, e.g. ``("h2h", "h2l")``."""
        return tuple(p for p in ("h2h", "h2l", "l2h", "l2l") if getattr(self, p) is not None)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, alpha_in={self.alpha_in}, "
            f"alpha_out={self.alpha_out}, groups={self.groups}, paths={self.paths}"
            + (f", channel_multiple={self.channel_multiple}" if self.channel_multiple > 1 else "")
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
        if _FORCE_REFERENCE:
            return self.h2h(high) if self.is_plain else self.forward_reference(high, low)
        if torch.compiler.is_compiling():
            # Under torch.compile the same strategies in plain PyTorch operators (the eager
            # fast form's custom autograd Functions, weight caches and in-place writes through
            # views break Dynamo's graph); the compiler fuses the pools and up-sampled adds and
            # chooses what to keep for backward itself.
            return self.h2h(high) if self.is_plain else self.forward_traceable(high, low)
        if self.is_plain:
            # The same convolution through the same dispatch as the octave paths, so a
            # vanilla model and its Oct version are timed on the same kernels.
            return self._path(high, "h2h")
        return self.forward_fast(high, low)

    def _path(self, x: torch.Tensor, path: str) -> torch.Tensor:
        conv = self._modules[path]
        weight, bias = _weight_bias(conv)
        return conv_nd(x, weight, bias, self._conv_stride, self.padding, conv.groups)

    def forward_fast(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        """Paper eq. 4 with the same weights as :meth:`forward_reference`, in fewer, cheaper ops.

        Always:
        - the low-to-high result is added to the high output through broadcast views
          (:func:`add_upsampled_`, in place; under autograd :func:`add_upsampled`, whose
          backward block-sums the gradient): the up-sampled map is never materialised;
        - every convolution runs on the kernel :func:`conv_nd` picks;
        - under autograd, h2l keeps only the un-pooled high input for backward (which h2h
          keeps anyway) and recomputes the pooled one there (``_ConvOfPooled``), as every
          path of a spatial-stride-2 layer does (:meth:`_forward_strided_autograd`), and the
          pools' backward writes the gradient directly (:func:`pool2x`).
        Without autograd (inference) also, where ``__init__``'s cost model says it pays (for
        ``pool_after_h2l`` and ``upsample_before_l2h``, the model of the input's device type,
        ``inference_strategies``):
        - ``stack_low_paths``: l2h and l2l read the same input, so they run as one
          convolution with their weights stacked on the output channels;
        - ``pool_after_h2l`` (kernels 1x1 in space, where pooling commutes with the
          convolution): h2l runs stacked with h2h on the high input and only its few output
          channels are pooled, instead of pooling the wide high input;
        - ``upsample_before_l2h`` (kernels 1x1 in space): for a wide high output, up-sample
          the narrow low *input* instead, and run h2h and l2h as one convolution over
          ``[high, up(low)]`` (and h2l, l2l as one over its pooled copy ``[pool(high), low]``);
        - ``join_strided`` (spatial stride 2, any kernel): the same two convolutions, over
          ``[pool(high), low]`` (h2h + l2h: both maps already have the output's size, nothing
          is up-sampled) and its pooled copy (h2l + l2l); no adds.
        Stacked weights are new tensors that autograd would keep for backward, and a
        stacked output keeps all its channels alive while any is saved; so under autograd
        the paths run separately, and training memory is that of the reference.
        """
        low_for_l2h = low  # stride 2: l2h reads the un-pooled low input (see forward_reference)
        mods = self._modules  # (the paths without Module.__getattr__'s Python call each)
        stack = not (torch.is_grad_enabled() and (
            high.requires_grad or (low is not None and low.requires_grad) or any(p.requires_grad for p in self.parameters())
        ))
        if self.downsample:
            if not stack:
                return self._forward_strided_autograd(high, low)
            high = pool2x(high)
            if low is not None:
                low = pool2x(low)
        plan = self._inference_strategy(high.device) if stack else None
        if stack and (plan["upsample_before_l2h"] or self.join_strided):
            return self._forward_joined(high, low_for_l2h, low)
        high_to_low = None
        strided_high = False  # y_high is a channel slice of a stacked output, not yet dense
        if stack and plan["pool_after_h2l"]:
            y_high, high_to_low = self._stacked(high, ("h2h", "h2l"))
            high_to_low = spatial_mean2x(high_to_low)
            strided_high = True
        elif not stack and self.pointwise_h2l and high.numel() >= self.pointwise_h2l_min_pixels * high.shape[1]:
            y_high, high_to_low = self._stacked_for_autograd(high)
        else:
            y_high = self._path(high, "h2h")
            if mods.get("h2l") is not None:
                if stack:
                    high_to_low = self._path(pool2x(high), "h2l")
                else:
                    high_to_low = self._conv_of_pooled(high, "h2l", 1)
        low_to_high = low_to_low = None
        if low is not None:
            if stack and self.stack_low_paths:
                low_to_high, low_to_low = self._stacked(low, ("l2h", "l2l"))
            else:
                low_to_high = self._path(low_for_l2h, "l2h") if mods.get("l2h") is not None else None
                low_to_low = self._path(low, "l2l") if mods.get("l2l") is not None else None
        if high_to_low is None:
            y_low = low_to_low
        elif low_to_low is None:
            y_low = high_to_low
        else:
            # In place into a fresh convolution output, except under autograd (where that
            # output may be a view made inside a custom Function).
            y_low = high_to_low.add_(low_to_low) if stack else high_to_low + low_to_low
        if strided_high:
            # One pass: the dense high output is written as (slice + up-sampled l2h) instead
            # of copying the slice dense and adding into the copy (on res2 maps that copy
            # was the largest non-convolution cost of the layer).
            dense = torch.empty(y_high.shape, dtype=y_high.dtype, device=y_high.device, memory_format=_memory_format_of(high))
            if low_to_high is None:
                y_high = dense.copy_(y_high)
            else:
                y_high = write_upsampled_sum(y_high, low_to_high, dense)
        elif low_to_high is not None:
            y_high = add_upsampled_(y_high, low_to_high) if stack else add_upsampled(y_high, low_to_high)
        return self._pack_output(y_high, y_low)

    def _conv_of_pooled(self, x: torch.Tensor, path: str, levels: int) -> torch.Tensor:
        """Path ``path`` over ``x`` pooled 2x2 ``levels`` times, keeping only ``x`` for backward."""
        conv = getattr(self, path)
        return _ConvOfPooled.apply(x, conv.weight, conv.bias, self._conv_stride, self.padding, conv.groups, levels)

    def _forward_strided_autograd(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        """Spatial stride 2 under autograd, keeping no pooled copy for backward.

        The paths read pooled inputs (h2h and l2l pooled once, h2l twice; l2h the un-pooled
        low input). Autograd would keep each pooled copy for its convolution's backward
        beside the un-pooled input, which the previous layer keeps anyway (its ReLU output,
        or the block input that conv1 keeps): so each path recomputes its pooled input in
        backward instead (:class:`_ConvOfPooled`). Same numbers as the pooled-first form.
        """
        y_high = self._conv_of_pooled(high, "h2h", 1) if self.h2h is not None else None
        y_low = self._conv_of_pooled(high, "h2l", 2) if self.h2l is not None else None
        if low is not None:
            if self.l2l is not None:
                low_to_low = self._conv_of_pooled(low, "l2l", 1)
                y_low = low_to_low if y_low is None else y_low + low_to_low
            if self.l2h is not None:
                y_high = add_upsampled(y_high, self._path(low, "l2h"))
        return self._pack_output(y_high, y_low)

    def _forward_joined(self, high: torch.Tensor, low: torch.Tensor, low_for_l2l: torch.Tensor) -> OctTensor:
        """Two convolutions over stacked inputs: h2h + l2h over ``[high, up(low)]``, h2l + l2l over its pool.

        ``high`` (pooled when strided), the low input of l2h (un-pooled when strided: it then
        has the output's size and is not up-sampled, ``join_strided``) and of l2l (pooled).
        """
        n, _, *size = high.shape
        fmt = torch.channels_last_3d if high.dim() == 5 else torch.channels_last
        both = torch.empty((n, self.in_high + self.in_low, *size), dtype=high.dtype, device=high.device,
                           memory_format=fmt if _channels_innermost(high) else torch.contiguous_format)
        both[:, : self.in_high].copy_(high)
        copy_upsampled_(both[:, self.in_high :], low)
        y_high = self._joined(both, ("h2h", "l2h"))
        if self.out_low == 0:
            return y_high
        # pool(both) = [pool(high), pool(up(low))], and pool(up(low)) is low again (each 2x2
        # block repeats one value; with stride 2, low is not up-sampled and it is pool(low)):
        # [pool(high), the low input of l2l] either way, built from the narrow high input
        # instead of pooling all of `both` (half the bytes read at alpha 0.5).
        return y_high, self._joined(torch.cat([pool2x(high), low_for_l2l], 1), ("h2l", "l2l"))

    def _joined(self, x: torch.Tensor, paths: Tuple[str, str]) -> torch.Tensor:
        """The sum of two paths whose inputs are stacked on the channels of ``x``: one convolution."""
        weight, bias = self._merged_weights(paths, 1)
        return conv_nd(x, weight, bias, self._conv_stride, self.padding, 1)

    def _stacked(self, x: torch.Tensor, paths: Tuple[str, str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Two paths reading ``x`` as one convolution; returns their two outputs (views)."""
        weight, bias = self._merged_weights(paths, 0)
        y = conv_nd(x, weight, bias, self._conv_stride, self.padding, 1)
        out = getattr(self, paths[0]).out_channels
        return y[:, :out], y[:, out:]

    def _stacked_for_autograd(self, high: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training form of h2h + h2l for kernels 1x1 in space: one convolution, h2l pooled after.

        Pooling commutes with such a convolution, so h2l runs at full resolution stacked on
        h2h's output channels and only its few output channels are pooled. Against h2l on the
        pooled input (:class:`_ConvOfPooled`) this drops, per training step, the pooling of
        the wide high input in forward and again in backward, the up-sampling of its gradient
        and the addition of that gradient into h2h's: about six passes over the high input,
        for h2l's multiply-adds at full resolution (at alpha 0.1 none at all on a CPU:
        oneDNN computes 58 output channels as 64, and 58 + 6 = 64). Memory is the same: the
        stacked output is not saved (split, pooled and copied), the convolution saves the
        high input as h2h did, and the stacked weight is a small new tensor.
        """
        a, b = self.h2h, self.h2l
        y_high, y_low = _StackedH2L.apply(high, a.weight, a.bias, b.weight, b.bias, self._conv_stride, self.padding)
        return y_high, pool2x(y_low)

    def _merged_weights(self, paths: Tuple[str, str], dim: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Two paths' weights concatenated on ``dim`` (0: stacked outputs, 1: joined inputs), and their bias.

        Used only without autograd. The result is cached until a weight or bias changes
        (new storage, in-place update: PyTorch's version counter) and reused: on small maps
        (res4, res5 at batch 1) a layer's time is mostly reading its weights, and
        concatenating them anew on every call read and wrote them once more. The cache is
        a plain attribute, not a buffer: it is not in the state_dict, and costs at most one
        more copy of the layer's weights while the model runs inference.
        """
        a, b = self._modules[paths[0]], self._modules[paths[1]]
        (wa, ba), (wb, bb) = _weight_bias(a), _weight_bias(b)
        sources = (wa, wb, ba, bb)
        # A source's identity, its storage's address and its version counter. The entry
        # holds the source storages, so while it exists no new storage can take their
        # addresses: a replaced parameter, or new data, always misses.
        # (Tensors made under torch.inference_mode have no version counter: not cached.)
        cacheable = not (wa.is_inference() or wb.is_inference() or (ba is not None and (ba.is_inference() or bb.is_inference())))
        if ba is None:
            state = (id(wa), wa.data_ptr(), wa._version, id(wb), wb.data_ptr(), wb._version) if cacheable else None
        else:
            state = tuple(x for t in sources for x in (id(t), t.data_ptr(), t._version)) if cacheable else None
        cache = self.__dict__.get("_merged_cache")
        if cache is None:
            cache = self.__dict__["_merged_cache"] = {}
        hit = cache.get((paths, dim))
        if cacheable and hit is not None and hit[0] == state:
            return hit[2], hit[3]
        weight = torch.cat([wa, wb], dim)
        if (ba is None) != (bb is None):
            raise AssertionError(f"paths {paths} disagree on having a bias (all paths of an OctConv have one or none)")
        if ba is None:
            bias = None
        elif dim == 0:
            bias = torch.cat([ba, bb], 0)
        else:
            bias = ba + bb
        if cacheable:
            keep = tuple(None if t is None else (t, t.untyped_storage()) for t in sources)
            cache[(paths, dim)] = (state, keep, weight, bias)
        return weight, bias

    def forward_traceable(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        """:meth:`forward_fast`'s strategies in plain PyTorch operators: what ``torch.compile`` runs.

        Paths that read one input run as one convolution with their weights concatenated
        (under inductor's freezing, inference, the concatenation is folded into a constant
        once); pools and the up-sampled l2h add are pointwise forms the compiler fuses
        (:func:`_pool2x_traceable`, :func:`_add_upsampled_traceable`). Without autograd the
        ``upsample_before_l2h``, ``join_strided`` and ``pool_after_h2l`` strategies apply as in eager
        (the first and last as chosen for the CPU on every device: see ``_MACS_PER_PASS``); under
        autograd h2h and h2l stack only behind the ``pointwise_h2l`` gate, as in eager, and
        l2h and l2l stack always (the compiler chooses what to keep for backward).
        Same numbers as :meth:`forward_reference` up to float rounding (tests).
        """
        mods = self._modules
        conv = F.conv3d if self._dims == 3 else F.conv2d
        stride, padding = self._conv_stride, self.padding

        def run(x, paths, dim=0):
            ws = [mods[p].weight for p in paths]
            bs = [mods[p].bias for p in paths]
            weight = ws[0] if len(ws) == 1 else torch.cat(ws, dim)
            bias = None if bs[0] is None else (bs[0] if len(bs) == 1 else (torch.cat(bs) if dim == 0 else sum(bs)))
            return conv(x, weight, bias, stride, padding, groups=1 if len(paths) > 1 else mods[paths[0]].groups)

        training = torch.is_grad_enabled() and (
            high.requires_grad or (low is not None and low.requires_grad) or any(p.requires_grad for p in self.parameters())
        )
        low_for_l2h = low
        if self.downsample:
            high = _pool2x_traceable(high)
            if low is not None:
                low = _pool2x_traceable(low)
        size = tuple(high.shape[-2:])
        if not training and (self.upsample_before_l2h or self.join_strided):
            both = torch.cat([high, _upsample_traceable(low_for_l2h, size)], 1)
            y_high = run(both, ("h2h", "l2h"), dim=1)
            if self.out_low == 0:
                return y_high
            return y_high, run(torch.cat([_pool2x_traceable(high), low], 1), ("h2l", "l2l"), dim=1)
        high_to_low = None
        stack_h2l = self.pool_after_h2l if not training else (
            self.pointwise_h2l and high.numel() >= self.pointwise_h2l_min_pixels * high.shape[1])
        if stack_h2l:
            y = run(high, ("h2h", "h2l"))
            y_high, high_to_low = y[:, : self.out_high], _pool2x_traceable(y[:, self.out_high :])
        else:
            y_high = run(high, ("h2h",))
            if mods.get("h2l") is not None:
                high_to_low = run(_pool2x_traceable(high), ("h2l",))
        low_to_high = low_to_low = None
        if low is not None:
            if self.stack_low_paths:
                y = run(low, ("l2h", "l2l"))
                low_to_high, low_to_low = y[:, : self.out_high], y[:, self.out_high :]
            else:
                low_to_high = run(low_for_l2h, ("l2h",)) if mods.get("l2h") is not None else None
                low_to_low = run(low, ("l2l",)) if mods.get("l2l") is not None else None
        if low_to_high is not None:
            y_high = _add_upsampled_traceable(y_high, low_to_high)
        if high_to_low is None:
            y_low = low_to_low
        elif low_to_low is None:
            y_low = high_to_low
        else:
            y_low = high_to_low + low_to_low
        return self._pack_output(y_high, y_low)

    def forward_reference(self, high: torch.Tensor, low: Optional[torch.Tensor]) -> OctTensor:
        """Straightforward four-path OctConv (paper eq. 4). Slow; kept as the numerical reference.

        Spatial stride 2 (official layout): h2h pools the high input once, h2l twice, l2l pools
        the low input, and l2h reads the UN-pooled low input, which already has the size of the
        strided high output, so it needs no up-sampling.
        """
        low_for_l2h = low
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
            y = self.l2h(low_for_l2h)
            if y_high is None:
                raise AssertionError("unreachable: l2h exists only when out_high > 0")
            y_high = y_high + upsample_to(y, y_high.shape[-2:])
        return self._pack_output(y_high, y_low)


def _pool2x_traceable(x: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_pool2x` for the compiler: even sizes as the mean of the four strided sub-grids.

    Inductor lowers ``avg_pool2d`` on the (N*T, C, H, W) view of channels-last memory to scalar
    code over a channels-first copy (measured: 0.85 ms for a res2 map that a vectorised pass
    reads in ~0.2 ms); four strided slices are one pointwise kernel in the input's layout.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h % 2 or w % 2:
        return spatial_pool2x(x)
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


def _upsample_traceable(low: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest up-sampling of ``low`` to ``size`` for the compiler (a broadcast view for even sizes)."""
    H, W = size
    if tuple(low.shape[-2:]) == (H, W):
        return low
    if H % 2 or W % 2:
        return upsample_nearest(low, (H, W))
    *lead, h, w = low.shape
    return low[..., :, None, :, None].expand(*lead, h, 2, w, 2).reshape(*lead, H, W)


def _add_upsampled_traceable(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``high + up(low)`` for the compiler (the broadcast up-sampling of :func:`_upsample_traceable`).

    (Unflattening ``high`` into 2x2 blocks instead made a second compile of the same model code
    for another input rank stall in Dynamo's shape reasoning.)
    """
    return high + _upsample_traceable(low, tuple(high.shape[-2:]))


def _weight_bias(conv: nn.Module) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(conv.weight, conv.bias)``, read from ``_parameters`` when both are plain parameters.

    (``Module.__getattr__`` costs a Python call per attribute, and an octave layer reads
    two to four weights per forward; a parametrized weight or bias takes the attribute.)
    """
    p = conv._parameters
    if "weight" in p and "bias" in p:
        return p["weight"], p["bias"]
    return conv.weight, conv.bias


def _autocast_state(device: str) -> Tuple[bool, Optional[torch.dtype]]:
    """(enabled, dtype) of autocast on a device type; (False, None) on one autocast does not
    know (``meta``: a model built on it for deferred initialisation or shape inference runs
    the same fast forward, training included)."""
    try:
        return torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except RuntimeError:
        return False, None


class _ConvOfPooled(torch.autograd.Function):
    """``conv_nd(pool2x(x), weight, bias)`` (pooled ``levels`` times) keeping only ``x`` for backward.

    Used where ``x`` is kept for backward anyway (by h2h, or by the layer before), so the
    pooled copy that autograd would keep for the convolution's backward is memory spent
    twice: the h2l path, and every path of a strided layer. Backward recomputes the pooled
    input (a pass over ``x``, no convolution), calls the convolution's backward kernels on
    it (:func:`conv_nd_backward`) and up-samples the input gradient through the pools
    (:func:`pool2x_grad`). Under autocast it re-runs the pooled convolution under the
    forward's autocast state and differentiates that (the casts are autocast's to make).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups, levels=1):
        device = x.device.type
        ctx.conv_args = (stride, padding, groups)
        ctx.levels = levels
        ctx.autocast = (device, *_autocast_state(device))
        ctx.save_for_backward(x, weight, bias)
        for _ in range(levels):
            x = spatial_pool2x(x)
        # No weight pre-packing here: grad mode is off inside a Function's forward, but the
        # weight changes every training step, so a pack would be rebuilt every call.
        return function_output(conv_nd(x, weight, bias, stride, padding, groups, pack=False))

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        if ctx.autocast[1]:
            return _ConvOfPooled._backward_autocast(ctx, x, weight, bias, grad)
        needs = ctx.needs_input_grad[:3]
        stride, padding, groups = ctx.conv_args
        shapes = []
        pooled = x
        for _ in range(ctx.levels):
            shapes.append(pooled.shape)
            pooled = spatial_pool2x(pooled)
        mask = [needs[0], needs[1], bias is not None and needs[2]]
        gx, gw, gb = conv_nd_backward(grad, pooled, weight, stride, padding, groups, mask)
        if gx is not None:
            fmt = _memory_format_of(x)
            for shape in reversed(shapes):
                gx = pool2x_grad(gx, shape, fmt)
        return (gx if needs[0] else None, gw if needs[1] else None,
                gb if mask[2] else None, None, None, None, None)

    @staticmethod
    def _backward_autocast(ctx, x, weight, bias, grad):
        device, enabled, dtype = ctx.autocast
        needs = ctx.needs_input_grad[:3]
        inputs = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip((x, weight, bias), needs)]
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            pooled = inputs[0]
            for _ in range(ctx.levels):
                pooled = pool2x(pooled)
            y = conv_nd(pooled, inputs[1], inputs[2], *ctx.conv_args)
        wanted = [t for t, need in zip(inputs, needs) if t is not None and need]
        grads = iter(torch.autograd.grad(y, wanted, grad))
        return tuple(next(grads) if t is not None and need else None
                     for t, need in zip(inputs, needs)) + (None, None, None, None)


_MKLDNN_BUILT: Optional[bool] = None  # torch.backends.mkldnn.is_available(): fixed by the build


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch.mkldnn_convolution`` computes this convolution as ``F.convNd`` would."""
    global _MKLDNN_BUILT
    # torch.compile traces F.convNd (it has no fake-tensor kernel for the oneDNN call) and
    # picks oneDNN kernels itself; checked first, as Dynamo refuses to trace
    # torch.backends.mkldnn.is_available (a graph break in every convolution).
    if torch.compiler.is_compiling() or x.device.type != "cpu" or not (x.dtype == weight.dtype == torch.float32):
        return False
    if _MKLDNN_BUILT is None:
        _MKLDNN_BUILT = torch.backends.mkldnn.is_available()
    return (
        _MKLDNN_BUILT and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")  # autocast casts in F.convNd, not here
    )


def conv_nd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    groups: int = 1,
    pack: bool = True,
) -> torch.Tensor:
    """``F.conv3d`` / ``F.conv2d`` by the fastest kernel we measured for ResNet stage shapes.

    On CPU in float32 that is oneDNN's convolution called directly. ``F.convNd`` picks a
    kernel by size heuristics that cost a lot at batch 1 on channels-last memory: 1x1
    kernels go to a GEMM-based path at ~45 GMAC/s, small 3D inputs (res4, res5, every
    low-frequency path, every temporal kernel) to the unblocked ``slow_conv3d`` at
    5-45 GMAC/s, where oneDNN runs 90-120 GMAC/s on one core of this machine (see
    docs/benchmarks.md). Without autograd on channels-last input, the weights are also
    pre-packed once into oneDNN's blocked layout (:func:`_packed_conv`; ``pack=False``
    where the call is part of a training step although autograd does not record it).
    Elsewhere (CUDA, float64, autocast) ``F.convNd`` as is.
    The plain convolutions of vanilla models take the same route, so vanilla and Oct
    models are compared on the same kernels.
    """
    stride, padding = tuple(stride), tuple(padding)
    if _use_onednn(x, weight):
        if pack and _packable(x, weight, bias):
            # Inference: the pre-packed weight, on the input as it is. (A 1-frame kernel on
            # frames folded into the batch, below, runs the same oneDNN kernel: measured
            # per shape, the 3D call took 0.91-0.99 of the folded one's time, and the
            # folding's four views cost ~14 us a call at batch 1.)
            return _packed_conv(x, weight, bias, padding, stride, groups)
        if _fold_frames(x, weight, stride, padding):
            # A kernel of 1 frame on channels_last_3d memory under autograd: frames folded
            # into the batch, (N*T, C, H, W), is a view. The forward is the same oneDNN
            # kernel, but the backward, which PyTorch dispatches by its own size rule again
            # (oneDNN for batch > 1 or more than 20480 rows N*C*T*H, else slow_conv3d), then
            # stays on oneDNN: 2-5x faster for the 1x3x3 kernels of res3-res5 and small
            # maps. (For 1x1 kernels on larger maps the 3D call is as fast or faster: res5 1x1.)
            n, t = x.shape[0], x.shape[2]
            x2 = x.transpose(1, 2).flatten(0, 1)
            y = torch.mkldnn_convolution(x2, weight.squeeze(2), bias, padding[1:], stride[1:], (1, 1), groups)
            return y.view((n, t) + y.shape[1:]).transpose(1, 2)
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1,) * len(stride), groups)
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    return conv(x, weight, bias, stride, padding, 1, groups)


def _fold_frames(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int]) -> bool:
    """Whether :func:`conv_nd` runs this 3D convolution as a 2D one over (N*T, C, H, W) (see there)."""
    return (
        x.dim() == 5 and weight.shape[2] == 1 and stride[0] == 1 and padding[0] == 0 and _channels_innermost(x)
        and (weight.shape[3] * weight.shape[4] > 1 or x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] <= 20480)
    )


def conv_nd_backward(grad, x, weight, stride, padding, groups, output_mask):
    """(grad input, grad weight, grad bias) of ``conv_nd(x, weight, bias, stride, padding, groups)``.

    The kernels autograd would pick for it: ``aten.convolution_backward`` (what autograd calls
    for ``mkldnn_convolution`` too), on the same frames-folded views as :func:`conv_nd`, so
    the backward of a 1-frame kernel stays on oneDNN.
    """
    stride, padding = tuple(stride), tuple(padding)
    bias_sizes = [weight.shape[0]] if output_mask[2] else None
    if _use_onednn(x, weight) and _fold_frames(x, weight, stride, padding):
        n, t = x.shape[0], x.shape[2]
        g2 = grad.transpose(1, 2).flatten(0, 1)
        x2 = x.transpose(1, 2).flatten(0, 1)
        gi, gw, gb = torch.ops.aten.convolution_backward(
            g2, x2, weight.squeeze(2), bias_sizes, stride[1:], padding[1:], [1, 1], False, [0, 0], groups, output_mask
        )
        if gi is not None:
            gi = gi.unflatten(0, (n, t)).transpose(1, 2)
        return gi, (gw.unsqueeze(2) if gw is not None else None), gb
    dims = len(stride)
    return torch.ops.aten.convolution_backward(
        grad, x, weight, bias_sizes, stride, padding, [1] * dims, False, [0] * dims, groups, output_mask
    )


class _StackedH2L(torch.autograd.Function):
    """h2h and h2l of a kernel 1x1 in space as one convolution, under autograd (training).

    Returns h2h's output (its own dense storage in the input's layout) and h2l's output at
    full resolution (a view, to be pooled). Saves only the input and the two weights
    (parameters): the stacked weight and output are rebuilt / never kept, so training memory
    is that of separate paths. Under autocast it computes in the autocast dtype as
    ``F.convNd`` would (input and weights cast, the cast input saved instead of the input)
    and returns gradients in the dtypes of the inputs.
    """

    @staticmethod
    def forward(ctx, x, w_high, b_high, w_low, b_low, stride, padding):
        device = x.device.type
        autocast, autocast_dtype = _autocast_state(device)
        dtype = autocast_dtype if autocast else x.dtype
        ctx.conv_args = (stride, padding)
        ctx.split = w_high.shape[0]
        ctx.has_bias = b_high is not None
        ctx.dtypes = (x.dtype, w_high.dtype, None if b_high is None else b_high.dtype)
        xc = x.to(dtype)
        ctx.save_for_backward(xc, w_high, w_low)
        weight = torch.cat([w_high, w_low], 0).to(dtype)
        bias = None if b_high is None else torch.cat([b_high, b_low], 0).to(dtype)
        with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
            y = conv_nd(xc, weight, bias, stride, padding, 1, pack=False)
        # h2h's part gets its own storage: whatever saves it later (BN) must not keep the
        # whole stacked output alive. h2l's part is only pooled (which saves nothing).
        fmt = _memory_format_of(x)
        return y[:, : ctx.split].clone(memory_format=fmt), function_output(y[:, ctx.split :])

    @staticmethod
    def backward(ctx, grad_high, grad_low):
        x, w_high, w_low = ctx.saved_tensors
        stride, padding = ctx.conv_args
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        like = grad_high if grad_high is not None else grad_low
        if grad_high is None:
            grad_high = like.new_zeros((like.shape[0], w_high.shape[0], *like.shape[2:]))
        if grad_low is None:
            grad_low = like.new_zeros((like.shape[0], w_low.shape[0], *like.shape[2:]))
        grad = torch.cat([grad_high, grad_low], 1).to(x.dtype)
        need_x, need_wh, need_bh, need_wl, need_bl = ctx.needs_input_grad[:5]
        mask = [need_x, need_wh or need_wl, ctx.has_bias and (need_bh or need_bl)]
        weight = torch.cat([w_high, w_low], 0).to(x.dtype)
        gx, gw, gb = conv_nd_backward(grad, x, weight, stride, padding, 1, mask)
        split = ctx.split
        cast = lambda t, dt: None if t is None else t.to(dt)  # noqa: E731
        gw_high = cast(gw[:split], w_dtype) if gw is not None and need_wh else None
        gw_low = cast(gw[split:], w_dtype) if gw is not None and need_wl else None
        gb_high = cast(gb[:split], b_dtype) if gb is not None and need_bh else None
        gb_low = cast(gb[split:], b_dtype) if gb is not None and need_bl else None
        return cast(gx, x_dtype) if need_x else None, gw_high, gb_high, gw_low, gb_low, None, None


# --------------------------------------------------------------------------- #
# Pre-packed weights for inference
# --------------------------------------------------------------------------- #
# oneDNN computes on weights in a blocked layout. ``torch.mkldnn_convolution`` reorders the
# plain weight into it on every call, which at batch 1 on small maps (res4, res5, the
# low-frequency paths) takes most of the call: measured on the 2-core CPU, pre-packed
# weights run the res5 convolutions in 0.25-0.8 of the time, res4 0.65-0.93, res2 0.95-1.0
# (docs/benchmarks.md). Without autograd, the weight is packed once per (weight version,
# input shape) by ``torch.ops.mkldnn._reorder_convolution_weight`` and run by
# ``torch.ops.mkldnn._convolution_pointwise``: the two operators PyTorch's own inductor
# uses for frozen CPU convolutions (private operators; if they are missing, octvideo falls
# back to ``torch.mkldnn_convolution``). The cache lives beside the weight (keyed by its
# id, dropped when the weight is freed), holds at most _PACKED_PER_WEIGHT input shapes,
# and is keyed by the weight's storage address and version counter, so an updated weight
# (optimizer step, load_state_dict) is packed again: training then evaluating costs one
# repack per evaluation, not a wrong answer.
_PACKED_PER_WEIGHT = 4
_packed_cache: dict = {}
_packing_available: Optional[bool] = None


def _packing_ok() -> bool:
    global _packing_available
    if _packing_available is None:
        try:
            _packing_available = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and callable(
                torch.ops.mkldnn._reorder_convolution_weight
            )
        except (AttributeError, RuntimeError):
            _packing_available = False
    return _packing_available


def _packable(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """Inference (nothing to differentiate) on dense channels-last memory, packing available."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.is_contiguous(memory_format=fmt) and not weight.is_inference() and _packing_ok()


def _packed_conv(x, weight, bias, padding, stride, groups) -> torch.Tensor:
    key = (x.shape, padding, stride, groups, weight.data_ptr(), weight._version)
    entry = _packed_cache.get(id(weight))
    if entry is not None and entry[0]() is weight:
        hit = entry[1].get(key)
        if hit is not None:  # the common case: the call's list arguments were kept with the pack
            return torch.ops.mkldnn._convolution_pointwise(x, hit[0], bias, *hit[2], groups, "none", [], "")
    else:
        entry = (weakref.ref(weight), {})
        _packed_cache[id(weight)] = entry
        weakref.finalize(weight, _packed_cache.pop, id(weight), None)
    packs = entry[1]
    # Drop packs of older versions of this weight, and the oldest shapes beyond the limit.
    for k in [k for k in packs if k[4:] != key[4:]]:
        del packs[k]
    while len(packs) >= _PACKED_PER_WEIGHT:
        del packs[next(iter(packs))]
    args = (list(padding), list(stride), [1] * len(stride))
    packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *args, groups, list(x.shape))
    # The pack holds the weight's storage: while it exists no other storage can take
    # that address, so a key (address, version) never matches different data.
    packs[key] = (packed, weight.untyped_storage(), args)
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, *args, groups, "none", [], "")



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
    alpha_in=0.5, alpha_out=0.5, groups=1, bias=False, channel_multiple=1)``

    Input: a Tensor ``(N, C, T, H, W)`` when ``alpha_in == 0``, else ``(high, low)``.
    Output: ``(high, low)``, or a Tensor when ``alpha_out == 0``. Channels split as
    the official code: ``low = int(alpha * C)``, ``high = C - low``; with
    ``channel_multiple`` M > 1 (``OCT.CHANNEL_MULTIPLE``), ``low`` is ``alpha * C`` rounded
    to a multiple of M (:func:`octvideo.layers.octave.split_channels`).
    """

    _dims = 3
    _conv_cls = nn.Conv3d


class OctConv2d(_OctConvNd):
    """2D Octave Convolution (ImageNet Oct-ResNet); same contract as :class:`OctConv3d`."""

    _dims = 2
    _conv_cls = nn.Conv2d
