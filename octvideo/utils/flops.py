"""FLOP and parameter counting with fvcore, and the paper's reference numbers.

Counting rule (fvcore's convention: one multiply-add = one flop):
- conv, linear, matmul / einsum (Non-local attention) and batch norm: fvcore's own handles;
- octave overhead, counted so it is visible and never silently skipped:
  2x2 average pools = 1 flop per input element (as fvcore counts adaptive average pools),
  nearest up-sampling = 1 flop per output element (fvcore's rule for upsample_nearest2d);
- element-wise adds, ReLU, max pools, softmax, means and copies count 0 (no multiply-add);
  they are registered explicitly, so fvcore prints no "Unsupported operator" warnings.
OctConvs are counted through their reference four-path forward (``reference_mode``), so a
count never depends on which fast implementation is active.

``conv_linear_gflops`` is also reported: only convolutions and linear layers, which is what
the paper's counter appears to count (it leaves out the Non-local attention matmuls; see
docs/flops.md).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

from octvideo.layers import reference_mode

# Paper Table 8 (Kinetics) and Table 2 (ImageNet) GFLOPs, keyed (MODEL.ARCH, OCT.ALPHA).
PAPER_GFLOPS: Dict[Tuple[str, float], float] = {
    ("c2d", 0.0): 19.3,
    ("c2d", 0.1): 17.4,
    ("i3d", 0.0): 28.1,
    ("i3d", 0.1): 25.6,
    ("i3d", 0.2): 22.1,
    ("i3d", 0.3): 15.3,
    ("i3d_nl", 0.0): 33.3,
    ("i3d_nl", 0.1): 28.9,
    ("resnet", 0.0): 4.1,
    ("resnet", 0.125): 3.6,
    ("resnet", 0.25): 3.1,
    ("resnet", 0.5): 2.4,
    ("resnet", 0.75): 1.9,
}


def _zero(inputs, outputs):
    return 0


def _repeat_interleave_flops(inputs, outputs):
    # Our nearest x2 up-sampling: count one flop per output element (fvcore's upsample rule).
    shape = get_shape(outputs[0])
    n = 1
    for s in shape or ():
        n *= s
    return n


_ZERO_OPS = [
    "aten::add", "aten::add_", "aten::sub", "aten::mul", "aten::mul_", "aten::div", "aten::pow",
    "aten::relu", "aten::relu_", "aten::max_pool2d", "aten::max_pool3d", "aten::softmax",
    "aten::mean", "aten::cat", "aten::expand", "aten::expand_as", "aten::slice", "aten::view",
    "aten::reshape", "aten::flatten", "aten::split", "aten::split_with_sizes", "aten::dropout",
    "aten::narrow", "aten::copy_", "aten::contiguous", "aten::unsqueeze", "aten::select",
    "aten::as_strided", "aten::clone", "aten::permute", "aten::transpose", "aten::pad",
    "aten::replication_pad2d", "aten::replication_pad3d", "aten::constant_pad_nd", "aten::einsum_",
]


def flop_analysis(model: nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    """An fvcore FlopCountAnalysis with octvideo's handles (see module docstring)."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**{op: _zero for op in _ZERO_OPS})
    analysis.set_op_handle(
        **{
            "aten::avg_pool2d": elementwise_flop_counter(1, 0),
            "aten::avg_pool3d": elementwise_flop_counter(1, 0),
            "aten::upsample_nearest2d": elementwise_flop_counter(0, 1),
            "aten::upsample_nearest3d": elementwise_flop_counter(0, 1),
            "aten::repeat_interleave": _repeat_interleave_flops,
        }
    )
    analysis.unsupported_ops_warnings(True)
    analysis.uncalled_modules_warnings(False)
    return analysis


def input_shape_for(cfg) -> Tuple[int, ...]:
    """One clip of the config's training size: (1, C, T, H, W) for video, (1, C, H, W) for images."""
    size = cfg.DATA.TRAIN_CROP_SIZE
    if cfg.MODEL.ARCH == "resnet":
        return (1, cfg.DATA.INPUT_CHANNEL_NUM, size, size)
    return (1, cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES, size, size)


def count_flops(model: nn.Module, input_shape: Tuple[int, ...]) -> Dict[str, float]:
    """GFLOPs (fvcore total and conv+linear only), parameters (M), and unsupported operators."""
    model = model.eval()
    x = torch.zeros(input_shape)
    with torch.no_grad(), reference_mode():
        analysis = flop_analysis(model, x)
        by_op = analysis.by_operator()
        total = analysis.total()
        unsupported = dict(analysis.unsupported_ops())
    conv_linear = sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "_convolution"))
    return {
        "gflops": total / 1e9,
        "conv_linear_gflops": conv_linear / 1e9,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "by_operator_gflops": {k: v / 1e9 for k, v in sorted(by_op.items())},
        "unsupported_ops": unsupported,
    }


def conv_macs(model: nn.Module, input_shape: Tuple[int, ...], channel_block: int = 1) -> float:
    """Multiply-adds of every convolution of ``model`` on one input, output channels rounded up.

    With ``channel_block`` = 1 this is the exact convolution count (fvcore's ``conv``). With
    16 (oneDNN's fp32 block on AVX-512 CPUs; 8 on AVX2) each convolution's output channels
    (per group) are rounded up to a multiple of the block, which is the work such a kernel
    really does: an octave path with 58 or 6 output channels costs 64 or 16. It shows how
    much of an octave model's FLOPs saving a blocked kernel can turn into time (alpha 0.1:
    see docs/benchmarks.md). Counted on the reference four-path form.
    """
    if channel_block < 1:
        raise ValueError(f"channel_block must be >= 1; got {channel_block}")
    total = [0.0]

    def hook(conv, inputs, output):
        groups = conv.groups
        out_per_group = conv.out_channels // groups
        padded = -(-out_per_group // channel_block) * channel_block
        pixels = output.numel() // output.shape[1]
        kernel = conv.weight[0].numel()  # in_channels / groups x kernel volume
        total[0] += float(pixels) * kernel * padded * groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad(), reference_mode():
            model.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def paper_gflops(arch: str, alpha: float) -> Optional[float]:
    return PAPER_GFLOPS.get((arch, round(float(alpha), 3)))
