"""Spatial transforms on uint8 frame tensors (plain tensor ops + torchvision v2 resize).

Layouts used here::

    frames   uint8   [T, 3, H, W]      (decoder output, channels moved first)
    clip     float32 [3, T, h, w]      (network input: C, T, H, W, normalised)
    views    float32 [V, 3, T, s, s]   (test: all views of one video)

pytorchvideo.transforms is not used: it does not import with current torchvision.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "to_tensor_frames",
    "short_side_size",
    "resize_short_side",
    "random_crop",
    "centre_crop",
    "spatial_crop_offsets",
    "normalise",
]


def to_tensor_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] (numpy, decoder layout) -> uint8 [T, 3, H, W] (torch), no copy.

    The result is a channels-last view: torchvision's uint8 resize is faster on it than on
    a contiguous copy (and gives the same pixels), and every later step copies anyway.
    """
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def short_side_size(*, height: int, width: int, size: int) -> Tuple[int, int]:
    """(h, w) after scaling so that min(h, w) == size, keeping the aspect ratio."""
    if height <= width:
        return size, max(size, int(round(width * size / height)))
    return max(size, int(round(height * size / width))), size


def resize_short_side(frames: torch.Tensor, *, size: int) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> uint8 [T, 3, h, w] with min(h, w) == size (antialiased bilinear)."""
    h, w = short_side_size(height=frames.shape[-2], width=frames.shape[-1], size=size)
    if (h, w) == tuple(frames.shape[-2:]):
        return frames
    return TF.resize(frames, [h, w], antialias=True)


def random_crop(frames: torch.Tensor, *, size: int, rng: np.random.Generator) -> torch.Tensor:
    """[..., H, W] -> [..., size, size] at a random position (same for all frames)."""
    h, w = frames.shape[-2:]
    _check_crop(h, w, size)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return frames[..., top : top + size, left : left + size]


def centre_crop(frames: torch.Tensor, *, size: int) -> torch.Tensor:
    """[..., H, W] -> [..., size, size] from the centre."""
    h, w = frames.shape[-2:]
    _check_crop(h, w, size)
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]


def spatial_crop_offsets(*, height: int, width: int, size: int, num_crops: int) -> List[Tuple[int, int]]:
    """(top, left) of the test crops along the LONG side.

    num_crops 1: centre. num_crops 3: left/centre/right for landscape videos,
    top/centre/bottom for portrait ones (same order: start, middle, end).
    """
    _check_crop(height, width, size)
    if num_crops not in (1, 3):
        raise ValueError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3; got {num_crops}")
    ctop, cleft = (height - size) // 2, (width - size) // 2
    if num_crops == 1:
        return [(ctop, cleft)]
    if height > width:  # portrait: slide vertically
        return [(0, cleft), (ctop, cleft), (height - size, cleft)]
    return [(ctop, 0), (ctop, cleft), (ctop, width - size)]


def normalise(
    frames: torch.Tensor, *, mean: Sequence[float], std: Sequence[float], out: Optional[torch.Tensor] = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 [..., T, 3, H, W] -> float32 [..., 3, T, H, W], (x / 255 - mean) / std.

    Computed in place in the output layout (``out`` when given, e.g. a slice of a batch, else
    a new tensor in ``memory_format``: channels_last_3d for a batch that a channels-last
    model reads) as x * (1 / (255 std)) - mean / std: a test item's 30 views are ~190 MB of
    floats, and a uint8 -> float copy plus two in-place passes is ~4x faster than mixed-type
    arithmetic or a chain of out-of-place operations. Runs on ``frames``' device (the
    evaluator normalises test views on the GPU, after moving them there as uint8).
    """
    x = frames.transpose(-4, -3)  # (T, C) -> (C, T), a view
    std_t = torch.as_tensor(std, dtype=torch.float32, device=frames.device).view(3, 1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=frames.device).view(3, 1, 1, 1)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=frames.device, memory_format=memory_format)
    elif tuple(out.shape) != tuple(x.shape) or out.dtype != torch.float32:
        raise ValueError(f"normalise: out is {out.dtype} {tuple(out.shape)}, expected float32 {tuple(x.shape)}")
    out.copy_(x)
    return out.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)


def _check_crop(h: int, w: int, size: int) -> None:
    if size > h or size > w:
        raise ValueError(f"crop size {size} does not fit frames of {w}x{h} (resize the short side first)")
