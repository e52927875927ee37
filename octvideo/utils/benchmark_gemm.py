"""1x1 convolutions as plain matrix products: the benchmark's opt-in ``gemm`` part.

The question (docs/benchmarks.md, "What would fix it"): for Oct-I3D a=0.1, cuDNN pads the
unaligned channel widths (int(0.1 C): 6, 12, 25, 51, ...) to a multiple of 8 before every
convolution, a copy of the whole input (the ``nhwcAddPaddingKernel`` of the ``overhead``
part's "copy / layout" kind). A 1x1 (1x1x1) convolution with stride 1 and no padding on
channels-last memory is one matrix product over the (N*T*H*W, C) view of its input, and a
BLAS takes any leading dimension, so it needs no padding copy. Two measurements say whether
that route should go into :func:`octvideo.layers.octconv.conv_nd`:

- per shape (:func:`run_gemm` "shapes"): every distinct 1x1 convolution one training step
  of each selected model runs, timed forward and backward as the convolution the model runs
  (``conv_nd`` / ``conv_nd_backward``) and as the GEMM form (:func:`conv1x1_gemm`,
  :func:`conv1x1_gemm_backward`); on CUDA the GEMM form twice, with TF32 matrix products
  off (PyTorch's default for ``torch.matmul``) and on (cuDNN convolutions already run fp32
  in TF32 by default: ``torch.backends.cudnn.allow_tf32``);
- whole calls (:func:`run_gemm` "steps"): each model's training step (and inference call)
  as it is and with every applicable convolution routed to the GEMM form
  (:func:`gemm_route`).

Only fp32 without autocast is routed: that is where the padding copy was measured, and a
bf16 route would be a different kernel choice. This module changes no model outside
:func:`gemm_route`'s ``with`` block.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from octvideo.layers import octconv as _octconv
from octvideo.layers.layout import _channels_innermost
from octvideo.utils.benchmark import _say, _train_step, interleaved_times, median_ms

# The route patched by gemm_route: the module attributes every octave and plain convolution
# of the models calls through (conv_nd in forward, conv_nd_backward in the custom backward
# passes of the stacked and pooled forms).
_ROUTED = ("conv_nd", "conv_nd_backward")


def gemm_applicable(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                    groups: int) -> bool:
    """Whether ``conv(x, weight)`` is one matrix product over a view of ``x``: a kernel of 1 in
    every dimension, stride 1, no padding, one group, fp32 outside autocast, channels-last
    (channels innermost) memory, so that (N*T*H*W, C) is a view and no copy is made."""
    return (
        weight.dim() == x.dim() and all(k == 1 for k in weight.shape[2:])
        and all(s == 1 for s in stride) and all(p == 0 for p in padding) and groups == 1
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled(x.device.type)
        and x.dim() in (4, 5) and _channels_innermost(x)
    )


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) with channels innermost -> its (N*prod(spatial), C) view."""
    perm = (0,) + tuple(range(2, t.dim())) + (1,)
    return t.permute(perm).reshape(-1, t.shape[1])


def _from_rows(rows: torch.Tensor, like: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`_rows_view`: (N*prod(spatial), C) rows -> (N, C, *spatial) in channels-last memory."""
    shape = (like.shape[0],) + tuple(like.shape[2:]) + (channels,)
    inv = (0, like.dim() - 1) + tuple(range(1, like.dim() - 1))
    return rows.view(shape).permute(inv)


def conv1x1_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.conv3d(x, weight, bias)`` (or conv2d) for a 1x1(x1) kernel as one matrix product on the
    rows view of channels-last ``x`` (:func:`gemm_applicable`); the output is channels-last.
    Differentiable (``F.linear``'s autograd: the backward is two matrix products and a sum)."""
    y = F.linear(_rows_view(x), weight.flatten(1), bias)
    return _from_rows(y, x, weight.shape[0])


def conv1x1_gemm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                          output_mask: Sequence[bool]) -> Tuple[Optional[torch.Tensor], ...]:
    """(grad input, grad weight, grad bias) of :func:`conv1x1_gemm`, as
    ``conv_nd_backward`` returns them (None where ``output_mask`` says not wanted)."""
    g = _rows_view(grad.contiguous(memory_format=torch.channels_last_3d if grad.dim() == 5 else torch.channels_last))
    w = weight.flatten(1)
    gi = _from_rows(g @ w, x, x.shape[1]) if output_mask[0] else None
    gw = (g.t() @ _rows_view(x)).view(weight.shape) if output_mask[1] else None
    gb = g.sum(0) if output_mask[2] else None
    return gi, gw, gb


@contextmanager
def _tf32(on: Optional[bool]) -> Iterator[None]:
    """``torch.backends.cuda.matmul.allow_tf32 = on`` for the block (None: unchanged)."""
    old = torch.backends.cuda.matmul.allow_tf32
    if on is not None:
        torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@contextmanager
def gemm_route(tf32: Optional[bool] = None) -> Iterator[None]:
    """Inside the block every convolution of the octvideo models that :func:`gemm_applicable`
    admits runs as :func:`conv1x1_gemm` (forward) and :func:`conv1x1_gemm_backward` (the custom
    backward passes); the rest as before. ``tf32`` sets ``torch.backends.cuda.matmul.allow_tf32``
    for the block (None: unchanged). Restores everything on exit."""
    native = {name: getattr(_octconv, name) for name in _ROUTED}

    def conv_nd(x, weight, bias, stride, padding, groups=1, pack=True):
        if gemm_applicable(x, weight, stride, padding, groups):
            return conv1x1_gemm(x, weight, bias)
        return native["conv_nd"](x, weight, bias, stride, padding, groups, pack)

    def conv_nd_backward(grad, x, weight, stride, padding, groups, output_mask):
        if gemm_applicable(x, weight, stride, padding, groups):
            return conv1x1_gemm_backward(grad, x, weight, output_mask)
        return native["conv_nd_backward"](grad, x, weight, stride, padding, groups, output_mask)

    _octconv.conv_nd, _octconv.conv_nd_backward = conv_nd, conv_nd_backward
    try:
        with _tf32(tf32):
            yield
    finally:
        for name, fn in native.items():
            setattr(_octconv, name, fn)


# A shape: (input shape, weight shape); every routed call has stride 1, no padding, one group.
Shape = Tuple[Tuple[int, ...], Tuple[int, ...]]


@contextmanager
def record_gemm_shapes(counts: Dict[Shape, int]) -> Iterator[None]:
    """Counts, into ``counts``, the forward convolutions :func:`gemm_applicable` admits that the
    models run inside the block (by input and weight shape); nothing else changes."""
    native = _octconv.conv_nd

    def conv_nd(x, weight, bias, stride, padding, groups=1, pack=True):
        if gemm_applicable(x, weight, stride, padding, groups):
            key = (tuple(x.shape), tuple(weight.shape))
            counts[key] = counts.get(key, 0) + 1
        return native(x, weight, bias, stride, padding, groups, pack)

    _octconv.conv_nd = conv_nd
    try:
        yield
    finally:
        _octconv.conv_nd = native


def gemm_variants(device: torch.device) -> Tuple[Tuple[str, Optional[bool]], ...]:
    """(label, allow_tf32 of the matrix products) of the GEMM forms timed on ``device``: on CUDA
    fp32 and TF32, on the CPU (no TF32) the one form."""
    if device.type == "cuda":
        return (("GEMM fp32", False), ("GEMM TF32", True))
    return (("GEMM", None),)


@dataclass
class GemmShapeRow:
    in_shape: Tuple[int, ...]
    weight_shape: Tuple[int, ...]
    # how many times each model's training-step forward runs this shape
    calls: Dict[str, int] = field(default_factory=dict)
    # (implementation, "forward" | "backward") -> seconds per call
    times: Dict[Tuple[str, str], List[float]] = field(default_factory=dict)


@dataclass
class GemmStepRow:
    name: str
    mode: str  # "train" or "inference"
    # "conv" (the model as it is) or a gemm_variants label -> seconds per call
    times: Dict[str, List[float]] = field(default_factory=dict)
    # routed forward convolutions per call
    routed: int = 0


def run_gemm(settings, models: Dict[str, torch.nn.Module], x: torch.Tensor, target: torch.Tensor
             ) -> Tuple[List[GemmShapeRow], List[GemmStepRow]]:
    """Both measurements for ``models`` (built, on the device, in channels-last memory, fp32)
    on input ``x``: per-shape rows and whole-call rows. ``settings`` is the benchmark's
    :class:`octvideo.utils.benchmark.Settings` (device, repeats, warmup, modes, progress)."""
    device = torch.device(settings.device)
    variants = gemm_variants(device)
    # Which 1x1 convolutions each model's training step runs (the forward; the backward of the
    # same convolutions has the same shapes).
    shapes: Dict[Shape, GemmShapeRow] = {}
    for name, m in models.items():
        m.train(True)
        counts: Dict[Shape, int] = {}
        with record_gemm_shapes(counts):
            _train_step(m, x, target, torch.enable_grad())
        m.zero_grad(set_to_none=True)
        for key, n in counts.items():
            shapes.setdefault(key, GemmShapeRow(key[0], key[1])).calls[name] = n
        _say(settings, f"[gemm] {name}: {sum(counts.values())} routable 1x1 convolutions per step, {len(counts)} shapes")

    shape_rows = sorted(shapes.values(), key=lambda r: (-r.in_shape[2] * r.in_shape[-1], r.in_shape[1], r.weight_shape[0]))
    for row in shape_rows:
        xs = torch.randn(row.in_shape, device=device).contiguous(
            memory_format=torch.channels_last_3d if len(row.in_shape) == 5 else torch.channels_last)
        w = torch.randn(row.weight_shape, device=device) / row.weight_shape[1] ** 0.5
        ones = (1,) * (len(row.in_shape) - 2)
        zeros = (0,) * len(ones)
        y = _octconv.conv_nd(xs, w, None, ones, zeros, 1, pack=False)
        grad = torch.randn_like(y)
        mask = (True, True, False)
        fns: Dict[str, Callable[[], object]] = {
            "conv forward": lambda: _octconv.conv_nd(xs, w, None, ones, zeros, 1, pack=False),
            "conv backward": lambda: _octconv.conv_nd_backward(grad, xs, w, ones, zeros, 1, mask),
        }
        for label, tf32 in variants:
            def fwd(tf32=tf32):
                with _tf32(tf32):
                    return conv1x1_gemm(xs, w, None)

            def bwd(tf32=tf32):
                with _tf32(tf32):
                    return conv1x1_gemm_backward(grad, xs, w, mask)
            fns[f"{label} forward"], fns[f"{label} backward"] = fwd, bwd
        with torch.no_grad():
            times = interleaved_times(fns, settings.repeats, settings.warmup, device, None)
        row.times = {tuple(k.rsplit(" ", 1)): v for k, v in times.items()}
        _say(settings, f"[gemm] {_shape_label(row)}: " + ", ".join(f"{k} {median_ms(v):.3f} ms" for k, v in times.items()))
        del xs, w, y, grad

    step_rows: List[GemmStepRow] = []
    modes = [m for m in settings.modes if m in ("train", "inference")]
    for mode in modes:
        for name, m in models.items():
            m.train(mode == "train")

            def call(m=m, mode=mode):
                if mode == "train":
                    _train_step(m, x, target, torch.enable_grad())
                else:
                    with torch.no_grad():
                        m(x)
            counts = {}
            with record_gemm_shapes(counts):
                call()
            row = GemmStepRow(name, mode, routed=sum(counts.values()))
            fns = {"conv": call}
            for label, tf32 in variants:
                def routed(tf32=tf32, call=call):
                    with gemm_route(tf32):
                        call()
                fns[label] = routed
            row.times = interleaved_times(fns, settings.repeats, settings.warmup, device, settings.progress,
                                          f"[gemm] {name} {mode}")
            m.zero_grad(set_to_none=True)
            step_rows.append(row)
    return shape_rows, step_rows


def _shape_label(row: GemmShapeRow) -> str:
    n, c, *spatial = row.in_shape
    return f"{c} -> {row.weight_shape[0]} on {n}x" + "x".join(map(str, spatial))


def gemm_tables(shape_rows: List[GemmShapeRow], step_rows: List[GemmStepRow], device: str
                ) -> List[Tuple[str, List[str], List[List[str]]]]:
    """(title, header, rows) of the ``gemm`` part: per shape, then per model and mode."""
    variants = [label for label, _ in gemm_variants(torch.device(device))]
    models = list(dict.fromkeys(m for r in shape_rows for m in r.calls))
    tables = []
    if shape_rows:
        header = ["1x1 convolution (C_in -> C_out on N x T x H x W)", "calls per step"]
        for d in ("forward", "backward"):
            header += [f"conv {d} ms"] + [f"{v} {d} ms (ratio)" for v in variants]
        rows = []
        for r in shape_rows:
            cells = [_shape_label(r), ", ".join(f"{m} {r.calls[m]}" for m in models if m in r.calls)]
            for d in ("forward", "backward"):
                conv = median_ms(r.times[("conv", d)])
                cells.append(f"{conv:.3f}")
                for v in variants:
                    g = median_ms(r.times[(v, d)])
                    cells.append(f"{g:.3f} ({g / conv:.2f})")
            rows.append(cells)
        # Per model: the step's 1x1 convolutions summed (time per call x calls), forward + backward.
        for m in models:
            conv = sum(r.calls.get(m, 0) * (median_ms(r.times[("conv", "forward")]) + median_ms(r.times[("conv", "backward")]))
                       for r in shape_rows)
            cells = [f"{m}: all of the step's, forward + backward", str(sum(r.calls.get(m, 0) for r in shape_rows)),
                     f"{conv:.3f}"]
            for v in variants:
                g = sum(r.calls.get(m, 0) * (median_ms(r.times[(v, "forward")]) + median_ms(r.times[(v, "backward")]))
                        for r in shape_rows)
                cells.append(f"{g:.3f} ({g / conv:.2f})")
            cells += [""] * (len(header) - len(cells))
            rows.append(cells)
        tables.append(("1x1 convolutions of a training step, each timed alone: the convolution the model runs "
                       "(conv_nd / conv_nd_backward) against one matrix product on the channels-last rows view "
                       "(backward: input and weight gradients)", header, rows))
    if step_rows:
        header = ["model", "mode", "routed convolutions", "conv ms"] + [f"{v} route ms (ratio)" for v in variants]
        rows = []
        for r in step_rows:
            conv = median_ms(r.times["conv"])
            rows.append([r.name, r.mode, str(r.routed), f"{conv:.2f}"]
                        + [f"{median_ms(r.times[v]):.2f} ({median_ms(r.times[v]) / conv:.3f})" for v in variants])
        tables.append(("Whole calls as they are and with every 1x1 convolution routed to the matrix product "
                       "(gemm_route); the ratio is against the same model's own call", header, rows))
    return tables
