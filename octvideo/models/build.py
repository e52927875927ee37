"""``build_model(cfg)``: the one entry point from a config to a network; ``compile_for_inference``."""
import torch
import torch.nn as nn

from octvideo.config.defaults import COMPILE_MODES

from .arch import get_arch
from .resnet import ResNet

# torch.compile modes that capture CUDA graphs on a GPU (inductor skips them on the CPU).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def build_model(cfg) -> nn.Module:
    """Build the network described by ``MODEL.*``, ``OCT.ALPHA`` and ``OCT.CHANNEL_MULTIPLE`` (see
    configs/ and defaults.py)."""
    arch = get_arch(cfg.MODEL.ARCH)
    model = ResNet(
        arch,
        depth=cfg.MODEL.DEPTH,
        alpha=float(cfg.OCT.ALPHA),
        width=cfg.MODEL.WIDTH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        dropout_rate=cfg.MODEL.DROPOUT_RATE,
        in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
        channel_multiple=int(cfg.OCT.CHANNEL_MULTIPLE),
    )
    return model


def model_memory_format(model: nn.Module, cfg) -> torch.memory_format:
    """The memory format ``MODEL.CHANNELS_LAST`` asks for: channels_last_3d (3D models) /
    channels_last (2D), or contiguous."""
    if not cfg.MODEL.CHANNELS_LAST:
        return torch.contiguous_format
    return torch.channels_last_3d if getattr(model, "dims", 3) == 3 else torch.channels_last


def to_model_memory_format(model: nn.Module, cfg) -> nn.Module:
    """``model`` with its weights in :func:`model_memory_format` (in place, as ``Module.to``).

    With channels-last weights and inputs every convolution reads and writes its tensors
    without layout conversions, and on the CPU the inference path pre-packs oneDNN weights
    (octvideo/layers/octconv.py); measured on 2 CPU cores, contiguous tensors made Oct-I3D
    a=0.5 inference 1.4x and its training step 1.36x slower (docs/benchmarks.md).
    """
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=model_memory_format(model, cfg))
    return model


class CompiledForInference(nn.Module):
    """``torch.compile(model)`` for evaluation, with inductor's *freezing* on the CPU.

    Freezing treats the weights as constants while compiling: BatchNorm is folded into the
    convolutions, the weights are pre-packed for oneDNN, and an OctConv's concatenated path
    weights (:meth:`OctConv3d.forward_traceable`) are concatenated once at compile time. It
    is valid only while the weights do not change, which holds for a test run; a model that
    trains further needs a new wrapper (``MODEL.COMPILE`` during training compiles the
    training model without freezing, see octvideo/engine/trainer.py). Every call runs
    without autograd (``torch.no_grad``). On CUDA it is a plain ``torch.compile``.
    ``state_dict`` and ``module`` are those of the wrapped model.

    ``mode`` is torch.compile's (``MODEL.COMPILE_MODE``). Under a CUDA-graph mode
    ("reduce-overhead", "max-autotune") on a GPU each call replays a captured graph whose
    output buffer the next replay overwrites, so the logits are returned as a copy: a caller
    that keeps the scores of several chunks (the multi-view test does) keeps them intact.
    """

    def __init__(self, model: nn.Module, mode: str = "default"):
        super().__init__()
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
        self.module = model
        self.mode = mode
        # Not registered as a submodule: the compiled wrapper shares the model's parameters.
        self.__dict__["_compiled"] = torch.compile(model, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inductor.config.patch, not a global setting: freezing applies to this model's graphs only.
        import torch._inductor.config as inductor_config

        with torch.no_grad(), inductor_config.patch(freezing=x.device.type == "cpu"):
            out = self._compiled(x)
        if x.device.type == "cuda" and self.mode in CUDA_GRAPH_MODES:
            out = out.clone()
        return out


def compile_for_inference(model: nn.Module, mode: str = "default") -> nn.Module:
    """The evaluation form of ``MODEL.COMPILE`` (``mode``: ``MODEL.COMPILE_MODE``); see
    :class:`CompiledForInference`."""
    return CompiledForInference(model, mode)
