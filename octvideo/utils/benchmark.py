"""Side-by-side speed and memory of vanilla and Oct networks and layers (issue "Performance").

Method (what makes two numbers comparable on a busy machine):
- every model of a group (and every implementation of a layer case) is built once, then
  the members are run round-robin, one call each per repeat, with the order rotated each
  repeat; a group's numbers are therefore measured under the same load;
- ``warmup`` untimed rounds first (oneDNN primitive creation, allocator, cudnn autotune),
  then the median of ``repeats`` timed calls; on CUDA each call is timed with CUDA events
  around a synchronised call;
- training memory is the bytes of the tensors autograd saves for backward during one
  training-mode forward, counted with ``torch.autograd.graph.saved_tensors_hooks`` and
  deduplicated by storage (parameters excluded: they exist whether or not one trains):
  deterministic, unlike the peak RSS; on CUDA the peak allocated memory of a training step
  is added (the model's weights, activations, gradients and temporaries, without the other
  models of the group: :func:`cuda_step_peak_bytes`);
- the fvcore FLOPs ratio (``octvideo.utils.flops``, reference four-path OctConv) is put
  beside every time ratio;
- a single layer case also times each octave path's convolution alone (``LAYER_PATHS``):
  OctConv3d against their sum is the layer's glue, their sum against Conv3d the narrower
  convolutions' efficiency (:func:`layer_tables`);
- the opt-in ``overhead`` part says whether a call is bound by the host (Python and per-operator
  dispatch) or by its kernels: the eager time beside, on CUDA, the replay of a CUDA graph of the
  same call (the kernels alone), and the host events, device kernels and kernel time of one
  profiled call, that time split by kind of kernel (convolution, batch norm, pool, up-sample,
  compiled fusion, ...: :func:`kernel_kind`); with ``compile`` the profiled call is the compiled
  one (:func:`run_overhead`);
- the opt-in ``gemm`` part times every 1x1 convolution of a training step, and whole calls,
  as the models run them and as one matrix product on the channels-last rows view
  (:mod:`octvideo.utils.benchmark_gemm`: would it dodge cuDNN's channel padding at a=0.1?).
"""
import logging
import math
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.layers import OctConv3d, reference_mode, spatial_pool2x
from octvideo.models import CUDA_GRAPH_MODES, ResNet, compile_for_inference, fuse_conv_bn
from octvideo.utils.flops import count_flops, flop_analysis

PARTS = ("models", "layers", "memory", "overhead", "gemm")
# What a run measures unless --only says otherwise; "overhead" (a profiled call per model) and
# "gemm" (1x1 convolutions as matrix products: octvideo.utils.benchmark_gemm) are opt-in.
DEFAULT_PARTS = ("models", "layers", "memory")

# (group, display name, MODEL.ARCH or "pytorchvideo", OCT.ALPHA); the first row of a group
# is the vanilla baseline every ratio of the group is taken against.
MODEL_ROWS: Tuple[Tuple[str, str, str, float], ...] = (
    ("I3D", "I3D", "i3d", 0.0),
    ("I3D", "Oct-I3D a=0.1", "i3d", 0.1),
    ("I3D", "Oct-I3D a=0.25", "i3d", 0.25),
    ("I3D", "Oct-I3D a=0.5", "i3d", 0.5),
    ("I3D", "pytorchvideo i3d_r50", "pytorchvideo", 0.0),
    ("C2D", "C2D", "c2d", 0.0),
    ("C2D", "Oct-C2D a=0.1", "c2d", 0.1),
    ("ResNet-50", "ResNet-50", "resnet", 0.0),
    ("ResNet-50", "Oct-ResNet-50 a=0.5", "resnet", 0.5),
)
MODEL_GROUPS = ("I3D", "C2D", "ResNet-50")
# Models whose FLOPs a target needs (its limit is a FLOPs ratio).
TARGET_FLOPS_MODELS = ("I3D", "Oct-I3D a=0.5")
MODES = ("inference", "fused", "train")
MODE_LABELS = {"fused": "inference BN folded"}

# ResNet-50 stage shapes of an 8x224x224 I3D clip: (stage, bottleneck width, frames, H = W).
# res2 runs before the temporal pool, res3-res5 after it.
LAYER_STAGES: Tuple[Tuple[str, int, int, int], ...] = (
    ("res2", 64, 8, 56),
    ("res3", 128, 4, 28),
    ("res4", 256, 4, 14),
    ("res5", 512, 4, 7),
)
# (kernel, input width, output width) in units of the bottleneck width w: the bottleneck's
# conv1 (4w -> w, 1x1 in space), conv3 (w -> 4w) and conv2 (w -> w, 1x3x3).
LAYER_KERNELS = (("1x1x1", 4, 1), ("1x1x1", 1, 4), ("1x3x3", 1, 1))
LAYER_ALPHAS = (0.1, 0.5)
# Implementations of one layer case, timed round-robin.
LAYER_IMPLS = ("Conv3d", "OctConv3d a=0", "naive 4-conv", "OctConv3d")
# Each octave path's convolution alone, on its own input (h2l on the pooled high input, l2h and
# l2l on the low input): timed round-robin with LAYER_IMPLS. Their sum is what the layer's
# convolutions cost with no pooling, up-sampling, adding or stacking; OctConv3d over that sum is
# its glue, and the sum over Conv3d the convolution kernels' efficiency against the FLOPs ratio.
LAYER_PATHS = ("h2h", "h2l", "l2h", "l2l")

TARGETS_DOC = (
    "Targets (issue Performance; CPU, fp32, batch 1, 2 threads): Oct-I3D a=0.1 inference <= 0.93 of I3D "
    "and of pytorchvideo I3D; Oct-I3D a=0.5 inference <= its FLOPs ratio + 0.05; Oct-ResNet-50 a=0.5 "
    "inference <= 0.62; Oct-I3D a=0.1 training step <= 0.95; saved-for-backward bytes of Oct-I3D a=0.5 "
    "<= 0.68; every layer case >= 1.3x faster than the naive four-conv form and not slower than Conv3d."
)


@dataclass
class Settings:
    device: str = "cpu"
    threads: Optional[int] = None
    repeats: int = 7
    warmup: int = 2
    parts: Sequence[str] = DEFAULT_PARTS
    groups: Sequence[str] = MODEL_GROUPS
    # "inference" (no grad), "fused" (no grad, eval copy with BN folded into the convs:
    # TEST.FUSE_CONV_BN, what tools/test_net.py runs; pytorchvideo's model unchanged),
    # "train" (a training step: zero the gradients, forward, loss, backward; no optimizer
    # update, whose per-parameter arithmetic is about the same for vanilla and Oct models).
    modes: Sequence[str] = MODES
    # "channels_last" (channels_last_3d for video) or "contiguous".
    memory_formats: Sequence[str] = ("channels_last",)
    # "fp32" or "bf16" (torch.autocast).
    precisions: Sequence[str] = ("fp32",)
    frames: int = 8
    size: int = 224
    # Clips (images) per call, for every mode; the targets are defined at batch 1.
    batch: int = 1
    compile: bool = False
    # torch.compile's mode under ``compile`` (MODEL.COMPILE_MODE).
    compile_mode: str = "default"
    # Names of MODEL_ROWS to run (empty: every row of the selected groups).
    models: Sequence[str] = ()
    # OCT.CHANNEL_MULTIPLE of the octave models (models, memory and overhead parts; single layers
    # keep the official split). Above 1 the models are not the issue's, so no target is evaluated.
    channel_multiple: int = 1
    flops: bool = True
    progress: Optional[Callable[[str], None]] = None


# ---------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call; on CUDA measured with events around a synchronised call."""
    if device.type == "cuda":
        _sync(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_times(
    fns: Dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    progress: Optional[Callable[[str], None]] = None,
    label: str = "",
) -> Dict[str, List[float]]:
    """Run the callables round-robin (order rotated every round); seconds per call, per name."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(time_call(fns[name], device))
        if progress:
            progress(f"{label} repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.1f} ms" for n in names))
    return times


def median_ms(times: Sequence[float]) -> float:
    return statistics.median(times) * 1e3


# ---------------------------------------------------------------------------- memory
def saved_tensor_bytes(fn: Callable[[], object], exclude: Sequence[torch.Tensor] = ()) -> Tuple[int, object]:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs.

    Deduplicated by storage (an in-place ReLU's input and output, or a tensor saved by two
    ops, count once); storages of ``exclude`` (the parameters) are not counted.
    Returns ``(bytes, fn's result)``.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. opaque)
            return t
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes and ptr not in skip:
            seen[ptr] = max(seen.get(ptr, 0), nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def cuda_step_peak_bytes(step: Callable[[], object], model: nn.Module, resident: Iterable[nn.Module],
                         device: torch.device) -> int:
    """Peak CUDA memory of one training ``step`` of ``model``, as if it were alone on the device.

    Every model of the group stays on the device between rounds, so the raw
    ``max_memory_allocated`` would also count the others' weights and the gradients left
    by their last steps. Here every model's gradients are freed first, and the peak is the
    most the step allocated above what was resident before it, plus ``model``'s own
    parameters: its weights, activations, gradients and temporaries.
    """
    for m in resident:
        m.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    model.zero_grad(set_to_none=True)
    params = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    return peak + sum(params.values())


# ---------------------------------------------------------------------------- building
def _memory_format(name: str, dims: int) -> torch.memory_format:
    if name == "contiguous":
        return torch.contiguous_format
    if name == "channels_last":
        return torch.channels_last_3d if dims == 3 else torch.channels_last
    raise ValueError(f"memory format must be 'contiguous' or 'channels_last'; got {name!r}")


def _autocast(device: torch.device, precision: str, cache_enabled: bool = True):
    """``cache_enabled=False`` for a CUDA graph capture (autocast's weight-cast cache must not outlive it)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")


def build_benchmark_model(arch: str, alpha: float, channel_multiple: int = 1) -> nn.Module:
    """An octvideo model from the default config (ResNet-50 depth, width 64), or pytorchvideo's I3D."""
    if arch == "pytorchvideo":
        import warnings

        from pytorchvideo.models.hub import i3d_r50

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return i3d_r50(pretrained=False)
    from octvideo.config import get_cfg
    from octvideo.models import build_model

    cfg = get_cfg()
    cfg.MODEL.ARCH = arch
    cfg.OCT.ALPHA = float(alpha)
    cfg.OCT.CHANNEL_MULTIPLE = int(channel_multiple)
    if arch == "resnet":
        cfg.MODEL.NUM_CLASSES = 1000
    return build_model(cfg)


def model_input_shape(arch: str, frames: int, size: int, batch: int = 1) -> Tuple[int, ...]:
    return (batch, 3, size, size) if arch == "resnet" else (batch, 3, frames, size, size)


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx) -> None:
    model.zero_grad(set_to_none=True)
    with ctx:
        logits = model(x)
    F.cross_entropy(logits.float(), target).backward()


# ---------------------------------------------------------------------------- models
@dataclass
class ModelRow:
    group: str
    name: str
    arch: str
    alpha: float
    gflops: Optional[float] = None
    # (memory_format, precision, mode) -> list of seconds
    times: Dict[Tuple[str, str, str], List[float]] = field(default_factory=dict)
    saved_bytes: Optional[int] = None
    cuda_peak_bytes: Dict[Tuple[str, str], int] = field(default_factory=dict)
    skipped: str = ""


def _uses_cuda_graphs(settings: Settings, device: torch.device) -> bool:
    """Whether the compiled runners replay CUDA graphs (a CUDA-graph compile mode on CUDA)."""
    return settings.compile and device.type == "cuda" and settings.compile_mode in CUDA_GRAPH_MODES


def _runners(models: Dict[str, nn.Module], settings: Settings, device: torch.device
             ) -> Tuple[Dict[str, nn.Module], Dict[str, nn.Module], Callable[[], None]]:
    """(inference runners, training runners, per-call step mark) of ``models``.

    Without ``settings.compile`` both are the models themselves. With it, training runs
    ``torch.compile`` (MODEL.COMPILE in training) and inference a separate compiled copy with
    the weights frozen on the CPU, as the test runs it (its graphs are built in the inference
    rounds, before any training step changes a weight). Under a CUDA-graph mode on CUDA each call
    is a step of its own for inductor's CUDA-graph trees (the calls of the models interleave), as
    the trainer marks its steps: call the mark before each call."""
    if not settings.compile:
        return dict(models), dict(models), lambda: None
    infer = {name: compile_for_inference(m, settings.compile_mode) for name, m in models.items()}
    train = {name: torch.compile(m, mode=settings.compile_mode) for name, m in models.items()}
    mark = torch.compiler.cudagraph_mark_step_begin if _uses_cuda_graphs(settings, device) else (lambda: None)
    return infer, train, mark


def _say(settings: Settings, msg: str) -> None:
    if settings.progress:
        settings.progress(msg)


def run_models(settings: Settings) -> List[ModelRow]:
    """Timings (``models`` part) and saved-for-backward bytes (``memory`` part) of MODEL_ROWS."""
    device = torch.device(settings.device)
    do_time = "models" in settings.parts
    do_memory = "memory" in settings.parts
    rows: List[ModelRow] = []
    for group in settings.groups:
        members = [r for r in MODEL_ROWS if r[0] == group and (not settings.models or r[1] in settings.models)]
        built: Dict[str, nn.Module] = {}
        group_rows: List[ModelRow] = []
        for _, name, arch, alpha in members:
            row = ModelRow(group, name, arch, alpha)
            group_rows.append(row)
            if arch == "pytorchvideo" and (settings.frames, settings.size) != (8, 224):
                row.skipped = "fixed-size head: needs 8x224x224 clips"
                continue
            _say(settings, f"[models] building {name}")
            model = build_benchmark_model(arch, alpha, settings.channel_multiple)
            shape = model_input_shape("resnet" if group == "ResNet-50" else "i3d", settings.frames, settings.size)
            # The a=0.5 inference target's limit is its FLOPs ratio + 0.05: those two models are
            # counted even under --no-flops (about a second each), so the target is never dropped.
            if settings.flops or name in TARGET_FLOPS_MODELS:
                _say(settings, f"[models] counting FLOPs of {name}")
                row.gflops = count_flops(model, shape)["gflops"]
            built[name] = model.to(device)
        rows.extend(group_rows)
        if not built:
            continue
        dims = 2 if group == "ResNet-50" else 3
        # FLOPs above are per clip (batch 1); timings and saved bytes are per call of `batch` clips.
        shape = model_input_shape("resnet" if dims == 2 else "i3d", settings.frames, settings.size, settings.batch)
        target = torch.zeros(settings.batch, dtype=torch.long, device=device)
        by_name = {r.name: r for r in group_rows}

        if do_memory:
            x = torch.randn(shape, device=device)
            for name, model in built.items():
                model.train()
                params = list(model.parameters())
                nbytes, out = saved_tensor_bytes(lambda: model(x), exclude=params)
                del out
                by_name[name].saved_bytes = nbytes
                _say(settings, f"[memory] {name}: {nbytes / 2**20:.1f} MiB saved for backward")

        if not do_time:
            continue
        fused_cache: Dict[Tuple[str, str], nn.Module] = {}

        def fused_runner(name: str, fmt: str) -> nn.Module:
            """The eval-mode copy with BN folded (TEST.FUSE_CONV_BN); pytorchvideo's model as it is."""
            if (name, fmt) not in fused_cache:
                model = built[name]
                m = fuse_conv_bn(model) if isinstance(model, ResNet) else model.eval()
                fused_cache[(name, fmt)] = compile_for_inference(m, settings.compile_mode) if settings.compile else m
            return fused_cache[(name, fmt)]

        for fmt in settings.memory_formats:
            mf = _memory_format(fmt, dims)
            x = torch.randn(shape, device=device).contiguous(memory_format=mf)
            infer_runners, runners, mark = _runners({name: m.to(memory_format=mf) for name, m in built.items()},
                                                    settings, device)
            for precision in settings.precisions:
                ctx = _autocast(device, precision)
                for mode in settings.modes:
                    fns = {}
                    for name, m in runners.items():
                        if mode in ("inference", "fused"):
                            built[name].eval()
                            m = fused_runner(name, fmt) if mode == "fused" else infer_runners[name]

                            def fn(m=m):
                                mark()
                                with torch.no_grad(), ctx:
                                    m(x)

                        else:
                            built[name].train()

                            def fn(m=m):
                                mark()
                                _train_step(m, x, target, ctx)

                        fns[name] = fn
                    label = f"[models] {group} {mode} {fmt} {precision}"
                    _say(settings, f"{label}: {settings.warmup} warm-up round(s)")
                    times = interleaved_times(fns, settings.repeats, settings.warmup, device, settings.progress, label)
                    for name, t in times.items():
                        by_name[name].times[(fmt, precision, mode)] = t
                    # Not under CUDA graphs: their private memory pool is allocated at capture, before
                    # the step measured, which would then report only its own few allocations.
                    if device.type == "cuda" and mode == "train" and not _uses_cuda_graphs(settings, device):
                        for name, fn in fns.items():
                            by_name[name].cuda_peak_bytes[(fmt, precision)] = cuda_step_peak_bytes(
                                fn, built[name], built.values(), device)
            for m in built.values():
                m.zero_grad(set_to_none=True)
        del built
    return rows


# ---------------------------------------------------------------------------- layers
@dataclass
class LayerRow:
    stage: str
    kernel: str
    alpha: float
    in_channels: int
    out_channels: int
    frames: int
    size: int
    flops_ratio: Optional[float] = None
    # (memory_format, precision, mode) -> impl (LAYER_IMPLS, LAYER_PATHS) -> list of seconds
    times: Dict[Tuple[str, str, str], Dict[str, List[float]]] = field(default_factory=dict)
    # CUDA only: the same keys -> impl -> (summed device-kernel ms, ms by kernel_kind) of one
    # profiled call. A small layer's timed call is mostly launch and synchronisation (tens of
    # microseconds each), which hides how its kernels compare; the kernels' own time does not.
    kernels: Dict[Tuple[str, str, str], Dict[str, Tuple[float, Dict[str, float]]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.stage} {self.kernel} {self.in_channels}->{self.out_channels} a={self.alpha:g}"


def layer_cases() -> List[LayerRow]:
    """The bottleneck's three convolutions (see LAYER_KERNELS) at each stage shape and alpha."""
    rows = []
    for stage, width, frames, size in LAYER_STAGES:
        for kernel, k_in, k_out in LAYER_KERNELS:
            cin, cout = k_in * width, k_out * width
            for alpha in LAYER_ALPHAS:
                rows.append(LayerRow(stage, kernel, alpha, cin, cout, frames, size))
    return rows


def _layer_modules(row: LayerRow) -> Tuple[nn.Conv3d, OctConv3d, OctConv3d]:
    k, pad = ((1, 1, 1), (0, 0, 0)) if row.kernel == "1x1x1" else ((1, 3, 3), (0, 1, 1))
    plain = nn.Conv3d(row.in_channels, row.out_channels, k, 1, pad, bias=False)
    plain_oct = OctConv3d(row.in_channels, row.out_channels, k, 1, pad, alpha_in=0.0, alpha_out=0.0)
    octconv = OctConv3d(row.in_channels, row.out_channels, k, 1, pad, alpha_in=row.alpha, alpha_out=row.alpha)
    return plain, plain_oct, octconv


def _layer_inputs(row: LayerRow, octconv: OctConv3d, device, mf, batch: int = 1
                  ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    t, s = row.frames, row.size
    x = torch.randn(batch, row.in_channels, t, s, s, device=device).contiguous(memory_format=mf)
    high = torch.randn(batch, octconv.in_high, t, s, s, device=device).contiguous(memory_format=mf)
    low = torch.randn(batch, octconv.in_low, t, (s + 1) // 2, (s + 1) // 2, device=device).contiguous(memory_format=mf)
    return x, (high, low)


def _layer_flops_ratio(row: LayerRow, plain: nn.Module, octconv: OctConv3d) -> float:
    x, pair = _layer_inputs(row, octconv, torch.device("cpu"), torch.contiguous_format)
    with torch.no_grad(), reference_mode():
        oct_flops = flop_analysis(octconv, (pair,)).total()
        plain_flops = flop_analysis(plain, (x,)).total()
    return oct_flops / plain_flops


def run_layers(settings: Settings) -> List[LayerRow]:
    """Each layer case's implementations and octave paths, at ``settings.batch`` clips per call,
    in each memory format and precision (bf16: torch.autocast, as the models part)."""
    device = torch.device(settings.device)
    rows = layer_cases()
    for i, row in enumerate(rows):
        plain, plain_oct, octconv = _layer_modules(row)
        if settings.flops:
            row.flops_ratio = _layer_flops_ratio(row, plain, octconv)
        plain, plain_oct, octconv = plain.to(device), plain_oct.to(device), octconv.to(device)
        for fmt in settings.memory_formats:
            mf = _memory_format(fmt, 3)
            # Weights in the inputs' layout, as a model gets them (MODEL.CHANNELS_LAST,
            # model.to(memory_format=...)): every implementation then reads its weights and
            # accumulates their gradients without a layout conversion per call.
            plain, plain_oct, octconv = (m.to(memory_format=mf) for m in (plain, plain_oct, octconv))
            x, pair = _layer_inputs(row, octconv, device, mf, settings.batch)
            # h2l's input, pooled once here: its path is timed as the convolution alone.
            pooled = spatial_pool2x(pair[0]).contiguous(memory_format=mf)
            path_inputs = {"h2h": pair[0], "h2l": pooled, "l2h": pair[1], "l2l": pair[1]}
            for precision in settings.precisions:
                for mode in settings.modes:
                    if mode == "fused":  # a single convolution has no BN to fold
                        continue
                    train = mode == "train"
                    for t in (x, pooled) + pair:
                        t.requires_grad_(train)
                    calls = {
                        "Conv3d": lambda: plain(x),
                        "OctConv3d a=0": lambda: plain_oct(x),
                        "naive 4-conv": lambda: octconv.forward_reference(*pair),
                        "OctConv3d": lambda: octconv(pair),
                    }
                    for path in LAYER_PATHS:
                        if getattr(octconv, path) is not None:
                            calls[path] = lambda path=path: octconv._path(path_inputs[path], path)
                    ctx = _autocast(device, precision)

                    def wrap(call):
                        if not train:
                            def fn():
                                with torch.no_grad(), ctx:
                                    call()
                            return fn

                        def step():
                            with ctx:
                                out = call()
                            out = out if isinstance(out, tuple) else (out,)
                            torch.autograd.backward([o.float().sum() for o in out])
                        return step

                    fns = {name: wrap(call) for name, call in calls.items()}
                    label = f"[layers {i + 1}/{len(rows)}] {row.name} {mode} {fmt} {precision}"
                    key = (fmt, precision, mode)
                    row.times[key] = interleaved_times(fns, settings.repeats, settings.warmup, device, None, label)
                    _say(settings, label + ": " + ", ".join(f"{n} {median_ms(t):.2f} ms" for n, t in row.times[key].items()))
                    if device.type == "cuda":
                        row.kernels[key] = {}
                        for name, fn in fns.items():
                            _, _, kernel_ms, kinds = profile_call(fn, device)
                            row.kernels[key][name] = (kernel_ms, kinds)
                    for p in list(plain.parameters()) + list(plain_oct.parameters()) + list(octconv.parameters()) + [x, pooled, *pair]:
                        p.grad = None
    return rows



# ---------------------------------------------------------------------------- overhead
@dataclass
class OverheadRow:
    group: str
    name: str
    mode: str  # "inference" or "train"
    precision: str
    eager_ms: float
    # Median replay of a CUDA graph captured from the same call (CUDA; a training step is captured
    # whole): no Python, no per-operator dispatch or launch, the kernels alone.
    graph_ms: Optional[float] = None
    graph_error: str = ""
    # One profiled call (torch.profiler): host-side events (operators, their children and the
    # CUDA runtime calls), device kernels and their summed device time (CUDA only).
    host_events: int = 0
    kernels: Optional[int] = None
    kernel_ms: Optional[float] = None
    # The profiled call's time by kind (:data:`KERNEL_KINDS`), milliseconds: on CUDA the device
    # kernels' time, on the CPU the operators' self time (no device kernels there).
    kinds: Dict[str, float] = field(default_factory=dict)


# Kinds of work a profiled call's time is split into, in report order.
KERNEL_KINDS = ("convolution", "batch norm", "pool", "up-sample", "compiled fusion", "matmul", "element-wise",
                "copy / layout", "other")


def kernel_kind(name: str) -> str:
    """The :data:`KERNEL_KINDS` entry of a CUDA kernel or a CPU operator, from its name.

    Names, not operator stacks, because a device kernel carries no link to the module that
    launched it in ``prof.events()``. The order of the checks matters: an inductor kernel's
    name lists the operators it fused ("triton_poi_fused__native_batch_norm_legit_no_training_
    add_relu_3"), so fusion is decided first; cuDNN's BatchNorm kernels live in the cudnn
    namespace beside its convolutions; cuDNN's convolutions are implicit GEMMs ("xmma_fprop_
    implicit_gemm", "dgrad", "wgrad") while a linear layer's kernel is a plain one ("xmma_gemm").
    A mean reduction ("MeanOps") is a pool: the models' only means are the head's global average
    pool and, on CUDA, the octave 2x2 block means (``block_mean2x``). cuDNN's channel padding of
    unaligned widths before a convolution ("nhwcAddPaddingKernel") is a layout copy.
    """
    n = name.lower()
    if n.startswith(("triton", "cpp_fused")) or "triton_" in n or "cpp_fused" in n:
        return "compiled fusion"
    if "batch_norm" in n or "batchnorm" in n or "bn_fw" in n or "bn_bw" in n:
        return "batch norm"
    if "pool" in n or "meanops" in n or n == "aten::mean":
        return "pool"
    if "upsample" in n or "interpolate" in n:
        return "up-sample"
    if any(k in n for k in ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm")):
        return "convolution"
    if any(k in n for k in ("gemm", "gemv", "addmm", "matmul", "linear", "cublas", "aten::mm", "aten::bmm")):
        return "matmul"
    if any(k in n for k in ("nchwtonhwc", "nhwctonchw", "copy", "clone", "contiguous", "reorder", "transpose",
                            "permute", "aten::cat", "catarray", "addpadding")):
        return "copy / layout"
    if any(k in n for k in ("elementwise", "aten::add", "aten::relu", "aten::mul", "aten::sub", "aten::div",
                            "threshold", "aten::fill", "aten::zero", "aten::where", "clamp")):
        return "element-wise"
    return "other"


def profile_call(fn: Callable[[], object], device: torch.device) -> Tuple[int, Optional[int], Optional[float], Dict[str, float]]:
    """(host events, device kernels, summed kernel milliseconds, milliseconds by
    :func:`kernel_kind`) of one call of ``fn`` (after one warm call). On the CPU there are no
    device kernels: the split is of the operators' self time (each event's time less its
    children's), which sums to the operators' total without counting a nested call twice."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    _sync(device)
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    host, kernels, kernel_us = 0, 0, 0.0
    device_kinds: Dict[str, float] = {}
    host_kinds: Dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
            # device_time_total in current PyTorch; cuda_time_total in older releases
            us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0) or 0
            kernel_us += us
            kind = kernel_kind(e.name)
            device_kinds[kind] = device_kinds.get(kind, 0.0) + us / 1e3
        elif e.device_type == torch.autograd.DeviceType.CPU:
            host += 1
            kind = kernel_kind(e.name)
            host_kinds[kind] = host_kinds.get(kind, 0.0) + (getattr(e, "self_cpu_time_total", 0) or 0) / 1e3
    if device.type != "cuda":
        return host, None, None, host_kinds
    return host, kernels, kernel_us / 1e3, device_kinds


def capture_cuda_graph(call: Callable[[], object], device: torch.device) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of ``call`` (a no-grad model call or a whole training step), warmed up on a
    side stream first as CUDA-graph capture requires.

    A training step (:func:`_train_step`) sets every ``.grad`` to None before its forward, so
    the captured backward writes the gradients into buffers of the graph's own pool, and each
    replay overwrites them (no accumulation across replays). BatchNorm's running statistics are
    updated in place on every replay, as an eager step does."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph


def _graph_call(model: nn.Module, mode: str, x: torch.Tensor, target: torch.Tensor, precision: str,
                device: torch.device) -> Callable[[], None]:
    """The eager call the ``overhead`` part captures for ``mode``: autocast without its weight
    cache (a cached cast made during capture would be freed after it)."""
    if mode == "train":
        return lambda: _train_step(model, x, target, _autocast(device, precision, cache_enabled=False))

    def infer():
        with torch.no_grad(), _autocast(device, precision, cache_enabled=False):
            model(x)
    return infer


def run_overhead(settings: Settings) -> List[OverheadRow]:
    """Host-bound or kernel-bound (``overhead`` part): per model of the selected groups, on the
    first memory format, per precision and mode (inference, train): the eager median; on CUDA,
    the median replay of a CUDA graph of the same call (for training, the whole step: forward,
    loss and backward; :func:`capture_cuda_graph`); and the host events,
    device kernels and kernel time of one profiled call. An eager time well above the graph
    replay (or the kernel time) is host overhead, which CUDA graphs or ``torch.compile`` remove
    and a faster kernel does not. The profiled call's time is also split by kind
    (:func:`kernel_kind`): where a model's time goes once the host is out of the way.

    With ``settings.compile`` every call is the compiled one (inference:
    :func:`compile_for_inference`, as the test runs it; training: ``torch.compile``), so the
    split shows what is left after inductor's fusion; no separate CUDA graph is captured then
    (under a CUDA-graph compile mode the compiled call replays its own)."""
    device = torch.device(settings.device)
    fmt = settings.memory_formats[0]
    modes = [m for m in settings.modes if m in ("inference", "train")]
    rows: List[OverheadRow] = []
    for group in settings.groups:
        dims = 2 if group == "ResNet-50" else 3
        mf = _memory_format(fmt, dims)
        built: Dict[str, nn.Module] = {}
        for _, name, arch, alpha in (r for r in MODEL_ROWS if r[0] == group and (not settings.models or r[1] in settings.models)):
            if arch == "pytorchvideo" and (settings.frames, settings.size) != (8, 224):
                continue  # fixed-size head, as in the models part
            _say(settings, f"[overhead] building {name}")
            built[name] = build_benchmark_model(arch, alpha, settings.channel_multiple).to(device).to(memory_format=mf)
        shape = model_input_shape("resnet" if dims == 2 else "i3d", settings.frames, settings.size, settings.batch)
        x = torch.randn(shape, device=device).contiguous(memory_format=mf)
        target = torch.zeros(settings.batch, dtype=torch.long, device=device)
        infer_runners, train_runners, mark = _runners(built, settings, device)
        for precision in settings.precisions:
            for mode in modes:
                fns: Dict[str, Callable[[], None]] = {}
                for name, m in built.items():
                    m.train(mode == "train")
                    if mode == "train":
                        def step(m=train_runners[name]):
                            mark()
                            _train_step(m, x, target, _autocast(device, precision))
                        fns[name] = step
                    else:
                        def infer(m=infer_runners[name]):
                            mark()
                            with torch.no_grad(), _autocast(device, precision):
                                m(x)
                        fns[name] = infer
                label = f"[overhead] {group} {mode} {fmt} {precision}"
                times = interleaved_times(fns, settings.repeats, settings.warmup, device, settings.progress, label)
                graph_times: Dict[str, List[float]] = {}
                graph_error = ""
                if device.type == "cuda" and not settings.compile:
                    try:
                        graphs = {name: capture_cuda_graph(_graph_call(m, mode, x, target, precision, device), device)
                                  for name, m in built.items()}
                        graph_times = interleaved_times({n: g.replay for n, g in graphs.items()}, settings.repeats,
                                                        settings.warmup, device, settings.progress, label + " CUDA graph")
                        del graphs
                    except RuntimeError as e:  # an operator that cannot be captured: say so, keep the rest
                        graph_error = str(e).splitlines()[0][:200]
                for name, fn in fns.items():
                    host, kernels, kernel_ms, kinds = profile_call(fn, device)
                    rows.append(OverheadRow(group, name, mode, precision, median_ms(times[name]),
                                            median_ms(graph_times[name]) if name in graph_times else None,
                                            graph_error, host, kernels, kernel_ms, kinds))
                    _say(settings, f"{label}: {name}: {host} host events" + (
                        f", {kernels} kernels, {kernel_ms:.2f} ms of kernels" if kernels is not None else ""))
                for m in built.values():
                    m.zero_grad(set_to_none=True)
        del built
    return rows


def run_gemm_part(settings: Settings):
    """The ``gemm`` part: per selected group, its octvideo models (pytorchvideo's I3D calls no
    octvideo convolution) in channels-last fp32 through
    :func:`octvideo.utils.benchmark_gemm.run_gemm`; (shape rows, call rows) of all groups."""
    from octvideo.utils.benchmark_gemm import run_gemm

    device = torch.device(settings.device)
    shape_rows, call_rows = [], []
    for group in settings.groups:
        dims = 2 if group == "ResNet-50" else 3
        mf = _memory_format("channels_last", dims)
        built: Dict[str, nn.Module] = {}
        for _, name, arch, alpha in (r for r in MODEL_ROWS if r[0] == group and (not settings.models or r[1] in settings.models)):
            if arch == "pytorchvideo":
                continue
            _say(settings, f"[gemm] building {name}")
            built[name] = build_benchmark_model(arch, alpha, settings.channel_multiple).to(device).to(memory_format=mf)
        if not built:
            continue
        shape = model_input_shape("resnet" if dims == 2 else "i3d", settings.frames, settings.size, settings.batch)
        x = torch.randn(shape, device=device).contiguous(memory_format=mf)
        target = torch.zeros(settings.batch, dtype=torch.long, device=device)
        shapes, calls = run_gemm(settings, built, x, target)
        shape_rows += shapes
        call_rows += calls
        del built
    return shape_rows, call_rows


def overhead_table(rows: List[OverheadRow]) -> Tuple[List[str], List[List[str]]]:
    """Ratios against the first model of the same group, mode and precision."""
    header = ["model", "mode", "precision", "eager ms", "eager ratio", "CUDA graph ms", "graph ratio",
              "host events", "device kernels", "kernel ms", "kernel ratio"]
    base: Dict[Tuple[str, str, str], OverheadRow] = {}
    table = []
    for r in rows:
        b = base.setdefault((r.group, r.mode, r.precision), r)
        table.append([r.name, r.mode, r.precision, _fmt(r.eager_ms, 2), _fmt(_ratio(r.eager_ms, b.eager_ms), 3),
                      _fmt(r.graph_ms, 2) if r.graph_ms is not None else (f"failed: {r.graph_error}" if r.graph_error else ""),
                      _fmt(_ratio(r.graph_ms, b.graph_ms), 3), str(r.host_events),
                      "" if r.kernels is None else str(r.kernels), _fmt(r.kernel_ms, 2), _fmt(_ratio(r.kernel_ms, b.kernel_ms), 3)])
    return header, table


def kinds_table(rows: List[OverheadRow]) -> Tuple[List[str], List[List[str]]]:
    """Milliseconds of the profiled call by :func:`kernel_kind`, with the ratio to the first
    model of the same group, mode and precision in parentheses; kinds no row has are left out."""
    present = [k for k in KERNEL_KINDS if any(r.kinds.get(k) for r in rows)]
    header = ["model", "mode", "precision"] + [f"{k} ms" for k in present] + ["total ms"]
    base: Dict[Tuple[str, str, str], OverheadRow] = {}
    table = []
    for r in rows:
        b = base.setdefault((r.group, r.mode, r.precision), r)
        cells = []
        for k in present + ["total"]:
            v = sum(r.kinds.values()) if k == "total" else r.kinds.get(k)
            bv = sum(b.kinds.values()) if k == "total" else b.kinds.get(k)
            ratio = _ratio(v, bv)
            cells.append("" if not v else _fmt(v, 2) + (f" ({ratio:.2f})" if ratio is not None and r is not b else ""))
        table.append([r.name, r.mode, r.precision] + cells)
    return header, table

# ---------------------------------------------------------------------------- report
def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def model_table(rows: List[ModelRow], settings: Settings) -> Tuple[List[str], List[List[str]]]:
    header = ["model", "GFLOPs", "FLOPs ratio"]
    keys = [(f, p, m) for f in settings.memory_formats for p in settings.precisions for m in settings.modes]
    for f, p, m in keys:
        label = MODE_LABELS.get(m, m)
        tag = label if (len(settings.memory_formats), len(settings.precisions)) == (1, 1) else f"{label} {f} {p}"
        header += [f"{tag} ms", f"{tag} ratio"]
    if any(r.saved_bytes is not None for r in rows):
        header += ["saved MiB", "saved ratio"]
    if any(r.cuda_peak_bytes for r in rows):
        header += [f"CUDA peak MiB {f} {p}" for f in settings.memory_formats for p in settings.precisions]
    table = []
    for group in settings.groups:
        members = [r for r in rows if r.group == group]
        if not members:
            continue
        base = members[0]
        for r in members:
            if r.skipped:
                table.append([r.name, f"skipped ({r.skipped})"] + [""] * (len(header) - 2))
                continue
            line = [r.name, _fmt(r.gflops, 2), _fmt(_ratio(r.gflops, base.gflops), 3)]
            for k in keys:
                t = r.times.get(k)
                bt = base.times.get(k)
                line += [_fmt(median_ms(t) if t else None, 1), _fmt(_ratio(median_ms(t), median_ms(bt)) if t and bt else None, 3)]
            if "saved MiB" in header:
                line += [_fmt(r.saved_bytes / 2**20 if r.saved_bytes is not None else None, 1),
                         _fmt(_ratio(r.saved_bytes, base.saved_bytes), 3)]
            if any(x.cuda_peak_bytes for x in rows):
                line += [_fmt(r.cuda_peak_bytes.get((f, p), 0) / 2**20, 0) for f in settings.memory_formats for p in settings.precisions]
            table.append(line)
    return header, table


def _layer_table_keys(settings: Settings):
    """(memory format, precision, mode, the mode's words for a title) of each layer table, in order."""
    for f in settings.memory_formats:
        for p in settings.precisions:
            for m in settings.modes:
                yield f, p, m, "inference (no grad)" if m == "inference" else "training step (forward + backward)"


def _paths_cell(ms: Dict[str, float], digits: int) -> Tuple[str, Optional[float]]:
    """The "h2h+h2l+l2h+l2l = sum" cell of the paths present in ``ms``, and that sum."""
    paths = [ms[n] for n in LAYER_PATHS if n in ms]
    if not paths:
        return "", None
    total = sum(paths)
    return "+".join(_fmt(v, digits) for v in paths) + f" = {_fmt(total, digits)}", total


def layer_tables(rows: List[LayerRow], settings: Settings) -> List[Tuple[str, List[str], List[List[str]]]]:
    """One table per (memory format, precision, mode): title, header, rows.

    "paths ms": the octave paths' convolutions alone (LAYER_PATHS), h2h + h2l + l2h + l2l, and
    their sum; "paths / Conv3d" sets that sum against the FLOPs ratio (how efficient the
    narrower convolutions' kernels are), "Oct / paths" is the layer's glue (pools, up-sampled
    adds, stacking) over its convolutions."""
    out = []
    header = ["layer (stage, kernel, channels, alpha)", "FLOPs ratio", "Conv3d ms", "OctConv3d a=0 ms",
              "naive 4-conv ms", "OctConv3d ms", "Oct / Conv3d", "Oct / Oct a=0", "speed-up vs naive",
              "paths ms (h2h+h2l+l2h+l2l = sum)", "paths / Conv3d", "Oct / paths"]
    for f, p, m, what in _layer_table_keys(settings):
        table = []
        for r in rows:
            t = r.times.get((f, p, m))
            if not t:
                continue
            med = {n: median_ms(v) for n, v in t.items()}
            cell, total = _paths_cell(med, 2)
            table.append([r.name + f" ({r.frames}x{r.size}x{r.size})", _fmt(r.flops_ratio, 3),
                          _fmt(med["Conv3d"], 2), _fmt(med["OctConv3d a=0"], 2), _fmt(med["naive 4-conv"], 2),
                          _fmt(med["OctConv3d"], 2), _fmt(med["OctConv3d"] / med["Conv3d"], 3),
                          _fmt(med["OctConv3d"] / med["OctConv3d a=0"], 3),
                          _fmt(med["naive 4-conv"] / med["OctConv3d"], 2) + "x",
                          cell, _fmt(_ratio(total, med["Conv3d"]), 3), _fmt(_ratio(med["OctConv3d"], total), 3)])
        if table:
            out.append((f"Single layers, {what}, {f}, {p}, batch {settings.batch}:", header, table))
    return out


def layer_kernel_tables(rows: List[LayerRow], settings: Settings) -> List[Tuple[str, List[str], List[List[str]]]]:
    """CUDA: the layer tables' comparisons in device-kernel time of one profiled call (no launch or
    synchronisation), and OctConv3d's kernel time by kind (:func:`kernel_kind`)."""
    out = []
    header = ["layer (stage, kernel, channels, alpha)", "FLOPs ratio", "Conv3d", "OctConv3d", "Oct / Conv3d",
              "paths (h2h+h2l+l2h+l2l = sum)", "paths / Conv3d", "Oct / paths", "OctConv3d by kind"]
    for f, p, m, what in _layer_table_keys(settings):
        table = []
        for r in rows:
            k = r.kernels.get((f, p, m))
            if not k:
                continue
            ms = {n: v[0] for n, v in k.items()}
            cell, total = _paths_cell(ms, 3)
            kinds = sorted(k["OctConv3d"][1].items(), key=lambda kv: -kv[1])
            table.append([r.name + f" ({r.frames}x{r.size}x{r.size})", _fmt(r.flops_ratio, 3),
                          _fmt(ms["Conv3d"], 3), _fmt(ms["OctConv3d"], 3), _fmt(_ratio(ms["OctConv3d"], ms["Conv3d"]), 3),
                          cell, _fmt(_ratio(total, ms["Conv3d"]), 3), _fmt(_ratio(ms["OctConv3d"], total), 3),
                          ", ".join(f"{kind} {v:.3f}" for kind, v in kinds if v >= 0.0005)])
        if table:
            out.append((f"Single layers, device-kernel ms of one profiled call, {what}, {f}, {p}, batch {settings.batch}:",
                        header, table))
    return out


def check_targets(models: List[ModelRow], layers: List[LayerRow]) -> List[Dict]:
    """The issue's targets, evaluated on the first memory format measured, fp32 (see TARGETS_DOC)."""
    out: List[Dict] = []
    by = {r.name: r for r in models}

    def times(name, mode):
        r = by.get(name)
        if not r:
            return None
        for (f, p, m), t in r.times.items():
            if p == "fp32" and m == mode:
                return t
        return None

    def add(what, value, limit, **extra):
        if value is None or limit is None:
            return
        out.append({"target": what, "value": round(value, 3), "limit": round(limit, 3), "met": value <= limit + 1e-12,
                    "margin": round(limit - value, 3), **extra})

    def add_time_ratio(what, name, ref, mode, limit):
        """Ratio of the medians (the target's definition), and the interquartile range of the
        per-round ratios (both models of a round ran back to back): how far one run can move it."""
        a, b = times(name, mode), times(ref, mode)
        if not a or not b:
            return
        per_round = sorted(x / y for x, y in zip(a, b))
        spread = None
        if len(per_round) >= 2:
            q = statistics.quantiles(per_round, n=4, method="inclusive")
            spread = [round(q[0], 3), round(q[2], 3)]
        add(what, _ratio(median_ms(a), median_ms(b)), limit, round_ratio_iqr=spread)

    add_time_ratio("Oct-I3D a=0.1 / I3D inference", "Oct-I3D a=0.1", "I3D", "inference", 0.93)
    add_time_ratio("Oct-I3D a=0.1 / pytorchvideo I3D inference", "Oct-I3D a=0.1", "pytorchvideo i3d_r50", "inference", 0.93)
    fr = None
    if "Oct-I3D a=0.5" in by and "I3D" in by:
        fr = _ratio(by["Oct-I3D a=0.5"].gflops, by["I3D"].gflops)
    a05 = None if fr is None else fr + 0.05
    add_time_ratio("Oct-I3D a=0.5 / I3D inference (limit: FLOPs ratio + 0.05)", "Oct-I3D a=0.5", "I3D", "inference", a05)
    add_time_ratio("Oct-ResNet-50 a=0.5 / ResNet-50 inference", "Oct-ResNet-50 a=0.5", "ResNet-50", "inference", 0.62)
    # The same with BN folded on both sides (TEST.FUSE_CONV_BN, what tools/test_net.py runs).
    add_time_ratio("BN folded: Oct-I3D a=0.1 / I3D inference", "Oct-I3D a=0.1", "I3D", "fused", 0.93)
    add_time_ratio("BN folded: Oct-I3D a=0.1 / pytorchvideo I3D (as it comes) inference",
                   "Oct-I3D a=0.1", "pytorchvideo i3d_r50", "fused", 0.93)
    add_time_ratio("BN folded: Oct-I3D a=0.5 / I3D inference (limit: FLOPs ratio + 0.05)", "Oct-I3D a=0.5", "I3D", "fused", a05)
    add_time_ratio("BN folded: Oct-ResNet-50 a=0.5 / ResNet-50 inference", "Oct-ResNet-50 a=0.5", "ResNet-50", "fused", 0.62)
    add_time_ratio("Oct-I3D a=0.1 / I3D training step", "Oct-I3D a=0.1", "I3D", "train", 0.95)
    if "Oct-I3D a=0.5" in by and "I3D" in by:
        add("Oct-I3D a=0.5 / I3D saved-for-backward bytes", _ratio(by["Oct-I3D a=0.5"].saved_bytes, by["I3D"].saved_bytes), 0.68)
    # Layer targets, for inference and for the training step (the issue names no mode: both
    # are reported), on the first memory format measured, fp32.
    for r in layers:
        first_format = next(iter(r.times), (None,))[0]
        for (f, p, m), t in r.times.items():
            if f != first_format or p != "fp32":
                continue
            med_l = {n: median_ms(v) for n, v in t.items()}
            add(f"{r.name} {m}: OctConv3d / naive 4-conv (limit 1/1.3)", med_l["OctConv3d"] / med_l["naive 4-conv"],
                1 / 1.3, layer="naive", case=r.name, mode=m)
            add(f"{r.name} {m}: OctConv3d / Conv3d", med_l["OctConv3d"] / med_l["Conv3d"], 1.0, layer="conv3d",
                case=r.name, mode=m)
    return out


def _fmt(v: Optional[float], digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_table(header: List[str], rows: List[List[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt_row = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


def machine_description(device: torch.device) -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    if device.type == "cuda":
        desc += f", {torch.cuda.get_device_name(device)}"
    try:
        import os

        load = os.getloadavg()
        desc += f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    except OSError:
        pass
    return desc


def run(settings: Settings) -> Dict:
    """Run the selected parts; returns everything measured (see :func:`report`)."""
    if not (isinstance(settings.batch, int) and settings.batch >= 1):
        raise ValueError(f"--batch must be a positive integer; got {settings.batch!r}")
    if not (isinstance(settings.channel_multiple, int) and settings.channel_multiple >= 1):
        raise ValueError(f"--channel-multiple must be a positive integer; got {settings.channel_multiple!r}")
    for part in settings.parts:
        if part not in PARTS:
            raise ValueError(f"--only takes {', '.join(PARTS)}; got {part!r}")
    names = [r[1] for r in MODEL_ROWS if r[0] in settings.groups]
    unknown = [m for m in settings.models if m not in names]
    if unknown:
        raise ValueError(f"--models: {', '.join(map(repr, unknown))} not among the models of groups "
                         f"{', '.join(settings.groups)}: {', '.join(names)}")
    device = torch.device(settings.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but CUDA is not available")
        torch.backends.cudnn.benchmark = True
    if settings.threads:
        torch.set_num_threads(settings.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    result = {"machine": machine_description(device), "settings": settings, "models": [], "layers": [], "overhead": [],
              "gemm": ([], [])}
    if "models" in settings.parts or "memory" in settings.parts:
        result["models"] = run_models(settings)
    if "layers" in settings.parts:
        result["layers"] = run_layers(settings)
    if "overhead" in settings.parts:
        result["overhead"] = run_overhead(settings)
    if "gemm" in settings.parts:
        result["gemm"] = run_gemm_part(settings)
    # The targets are defined at batch 1, for the official octave split (OCT.CHANNEL_MULTIPLE 1;
    # single layers always have it).
    at_target = settings.batch == 1
    official = settings.channel_multiple == 1
    result["targets"] = check_targets(result["models"] if at_target and official else [],
                                      result["layers"] if at_target else [])
    try:
        import os

        result["machine"] += ", load average {:.2f} at the end".format(os.getloadavg()[0])
    except OSError:
        pass
    return result


def report(result: Dict, markdown: bool = False) -> str:
    settings: Settings = result["settings"]
    parts = [f"Machine: {result['machine']}",
             f"Median of {settings.repeats} interleaved calls after {settings.warmup} warm-up round(s); "
             f"batch {settings.batch}, {settings.frames}x{settings.size}x{settings.size} clips (ResNet-50: {settings.size}x{settings.size}); "
             f"memory format(s) {', '.join(settings.memory_formats)}; precision(s) {', '.join(settings.precisions)}"
             + (f"; torch.compile mode {settings.compile_mode}" if settings.compile else "")
             + (f"; octave models with OCT.CHANNEL_MULTIPLE {settings.channel_multiple} (not the published split: "
                "no target evaluated; single layers keep the official split)" if settings.channel_multiple > 1 else "")
             + ("" if not (settings.compile and settings.device == "cuda" and settings.compile_mode in CUDA_GRAPH_MODES)
                else " (CUDA graphs: no CUDA peak memory, the graphs' pool is allocated at capture)") + ". Ratios are against the first row of each group."]
    if result["models"]:
        parts.append(format_table(*model_table(result["models"], settings), markdown))
    for title, header, table in layer_tables(result["layers"], settings) + layer_kernel_tables(result["layers"], settings):
        parts.append(title + "\n\n" + format_table(header, table, markdown))
    if result.get("overhead"):
        compiled = f"compiled calls, torch.compile mode {settings.compile_mode}: no separate graph capture" if settings.compile \
            else "CUDA graph: median replay of a graph captured from the same call; a training step is captured whole, forward, loss and backward"
        parts.append(f"Host overhead ({settings.memory_formats[0]}; one profiled call per row; {compiled}):\n\n"
                     + format_table(*overhead_table(result["overhead"]), markdown))
        what = ("device kernel time" if settings.device.startswith("cuda")
                else "operator self time (no device kernels on the CPU)")
        parts.append(f"Where the profiled call's time goes: {what} by kind, ms (ratio to the first model of the "
                     "group):\n\n" + format_table(*kinds_table(result["overhead"]), markdown))
    if any(result.get("gemm", ([], []))):
        from octvideo.utils.benchmark_gemm import gemm_tables

        for title, header, table in gemm_tables(*result["gemm"], settings.device):
            parts.append(f"{title} (fp32, channels-last, batch {settings.batch}):\n\n" + format_table(header, table, markdown))
    model_targets = [t for t in result["targets"] if not t.get("layer")]
    if model_targets:
        header = ["target", "value", "limit", "met", "margin", "per-round ratio IQR"]
        rows = [[t["target"], f"{t['value']:.3f}", f"{t['limit']:.3f}", "yes" if t["met"] else "**no**" if markdown else "NO",
                 f"{t['margin']:+.3f}",
                 "{:.3f}-{:.3f}".format(*t["round_ratio_iqr"]) if t.get("round_ratio_iqr") else ""] for t in model_targets]
        parts.append(format_table(header, rows, markdown))
        parts.append("value: the ratio of the two models' medians (the target's definition); per-round ratio IQR: "
                     "the middle half of the ratios of the calls made back to back in each round: the spread within "
                     "this run (from one run to the next the value can move more: allocator and machine state).")
    for kind, what in (("naive", "at least 1.3x faster than the naive four-conv form"), ("conv3d", "not slower than Conv3d")):
        for mode, mode_name in (("inference", "inference"), ("train", "training step")):
            cases = [t for t in result["targets"] if t.get("layer") == kind and t.get("mode") == mode]
            if cases:
                missed = [f"{t['case']} ({t['value']:.2f})" for t in cases if not t["met"]]
                slower = sum(t["value"] > 1.0 for t in cases) if kind == "naive" else None
                parts.append(f"Layer cases {what} ({mode_name}): {len(cases) - len(missed)} of {len(cases)}"
                             + (f"; slower than the naive form: {slower}" if slower is not None else "")
                             + (f"; missed (OctConv3d time / that time): {', '.join(missed)}" if missed else "") + ".")
    return "\n\n".join(parts)


def to_json(result: Dict) -> Dict:
    settings: Settings = result["settings"]
    return {
        "machine": result["machine"],
        "settings": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in vars(settings).items() if k != "progress"},
        "models": [
            {"group": r.group, "name": r.name, "arch": r.arch, "alpha": r.alpha, "gflops": r.gflops, "skipped": r.skipped,
             "saved_bytes": r.saved_bytes,
             "median_ms": {"/".join(k): median_ms(v) for k, v in r.times.items()},
             "times_s": {"/".join(k): v for k, v in r.times.items()},
             "cuda_peak_bytes": {"/".join(k): v for k, v in r.cuda_peak_bytes.items()}}
            for r in result["models"]
        ],
        "layers": [
            {"name": r.name, "stage": r.stage, "kernel": r.kernel, "alpha": r.alpha, "in_channels": r.in_channels,
             "out_channels": r.out_channels, "frames": r.frames, "size": r.size, "flops_ratio": r.flops_ratio,
             "median_ms": {"/".join(k): {n: median_ms(t) for n, t in v.items()} for k, v in r.times.items()},
             "kernel_ms": {"/".join(k): {n: {"total": t, "by_kind": kinds} for n, (t, kinds) in v.items()}
                           for k, v in r.kernels.items()}}
            for r in result["layers"]
        ],
        "targets": result["targets"],
        "overhead": [asdict(r) for r in result.get("overhead", [])],
        "gemm": {
            "shapes": [{"in_shape": list(r.in_shape), "weight_shape": list(r.weight_shape), "calls": r.calls,
                        "median_ms": {"/".join(k): median_ms(v) for k, v in r.times.items()}}
                       for r in result.get("gemm", ([], []))[0]],
            "calls": [{"name": r.name, "mode": r.mode, "routed": r.routed,
                       "median_ms": {k: median_ms(v) for k, v in r.times.items()}}
                      for r in result.get("gemm", ([], []))[1]],
        },
    }


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
