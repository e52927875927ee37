"""Checking a pytorchvideo conversion: the same weights must give the same logits in both libraries.

The pytorchvideo hub models ``c2d_r50`` and ``i3d_r50`` (Kinetics-400, 8x8, PySlowFast-trained) are
octvideo's ``c2d`` and ``i3d`` table rows at depth 50 with alpha 0 (see octvideo/models/arch.py):
same stem, same temporal kernels, stride on the 3x3 conv, temporal max pool after res2. Their head
averages with a fixed ``AvgPool3d((4, 7, 7))`` -- the global average for 8 x 224 x 224 clips, the
published input; octvideo's head averages globally at any size, so other clip sizes need
``head_pool_kernel_size`` set to the res5 feature size for the two to agree.
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn

from .io import unwrap_model

# octvideo MODEL.ARCH -> pytorchvideo hub builder (pytorchvideo.models.hub.resnet).
HUB_MODELS = {"c2d": "c2d_r50", "i3d": "i3d_r50"}


def head_pool_kernel(clip_shape: Sequence[int]) -> tuple:
    """pytorchvideo's head pool kernel covering the whole res5 map of a (C, T, H, W) clip."""
    _, t, h, w = clip_shape
    # Temporal: halved by the pool after res2. Spatial: /32 (stem conv, stem pool, res3-res5).
    return (max(1, -(-t // 2)), -(-h // 32), -(-w // 32))


def build_reference(arch: str, width: int = 64, num_classes: int = 400, clip_shape=(3, 8, 224, 224)) -> nn.Module:
    """The pytorchvideo hub model for octvideo's ``arch`` (random weights), in eval mode."""
    if arch not in HUB_MODELS:
        raise ValueError(f"MODEL.ARCH={arch!r} has no pytorchvideo hub counterpart; one of {sorted(HUB_MODELS)}")
    from pytorchvideo.models.hub import resnet as hub

    builder = getattr(hub, HUB_MODELS[arch])
    model = builder(pretrained=False, stem_dim_out=width, model_num_class=num_classes,
                    head_pool_kernel_size=head_pool_kernel(clip_shape), dropout_rate=0.0)
    return model.eval()


@torch.no_grad()
def compare_logits(octvideo_model: nn.Module, reference: nn.Module, clip_shape=(3, 8, 224, 224),
                   batch: int = 2, seed: int = 0) -> Dict[str, float]:
    """Max |difference| of the logits of two eval-mode models on a random clip batch, and their scale."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch,) + tuple(clip_shape), generator=g)
    a = unwrap_model(octvideo_model).eval()(x)
    b = reference.eval()(x)
    if a.shape != b.shape:
        raise ValueError(f"logits of shape {tuple(a.shape)} (octvideo) and {tuple(b.shape)} (pytorchvideo)")
    return {"max_abs_diff": (a - b).abs().max().item(), "max_abs_logit": b.abs().max().item(),
            "same_top1": bool((a.argmax(1) == b.argmax(1)).all())}
