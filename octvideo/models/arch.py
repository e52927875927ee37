"""Architectures as data: one table row per ``MODEL.ARCH`` drives :func:`build_resnet`.

C2D and I3D differ by a row of this table, not by a class (PySlowFast's habit). The Oct
version of each is the same row built with ``OCT.ALPHA > 0``.

The 3D rows reproduce the published Kinetics ResNet-50 8x8 models (PySlowFast /
pytorchvideo ``c2d_r50`` and ``i3d_r50``); the 2D row is torchvision's ResNet-50.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# Blocks per stage (res2, res3, res4, res5).
STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}


@dataclass(frozen=True)
class ArchSpec:
    """One architecture. Kernel and stride tuples are (T, H, W) for 3D rows, (H, W) for 2D."""

    name: str
    dims: int  # 3: video (N, C, T, H, W); 2: image (N, C, H, W)
    stem_kernel: Tuple[int, ...]
    # Temporal kernel size of the first (1x1 spatial) conv of each bottleneck, per stage,
    # as published for ResNet-50; other depths cycle the pattern.
    temporal_kernels: Tuple[Tuple[int, ...], ...] = ((1,), (1,), (1,), (1,))
    # Temporal max pool (kernel = stride) applied after res2; 1 = none.
    pool1_temporal: int = 1
    # Blocks after which a Non-local block is inserted, per stage (0-based indices).
    nonlocal_after: Tuple[Tuple[int, ...], ...] = ((), (), (), ())

    def stage_temporal_kernels(self, stage: int, depth: int) -> List[int]:
        pattern = self.temporal_kernels[stage]
        return [pattern[i % len(pattern)] for i in range(depth)]

    def stage_nonlocal(self, stage: int, depth: int) -> List[int]:
        return [i for i in self.nonlocal_after[stage] if i < depth]


_I3D_TEMPORAL = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))
# Non-local after blocks 1 and 3 of res3 and 1, 3, 5 of res4: 5 blocks (Wang et al., PySlowFast).
_NL_AFTER = ((), (1, 3), (1, 3, 5), ())

ARCHS: Dict[str, ArchSpec] = {
    "resnet": ArchSpec("resnet", dims=2, stem_kernel=(7, 7)),
    "c2d": ArchSpec("c2d", dims=3, stem_kernel=(1, 7, 7), pool1_temporal=2),
    "i3d": ArchSpec("i3d", dims=3, stem_kernel=(5, 7, 7), temporal_kernels=_I3D_TEMPORAL, pool1_temporal=2),
    "c2d_nl": ArchSpec("c2d_nl", dims=3, stem_kernel=(1, 7, 7), pool1_temporal=2, nonlocal_after=_NL_AFTER),
    "i3d_nl": ArchSpec(
        "i3d_nl", dims=3, stem_kernel=(5, 7, 7), temporal_kernels=_I3D_TEMPORAL, pool1_temporal=2,
        nonlocal_after=_NL_AFTER,
    ),
}

# Human-readable names, as in the paper's Table 8.
DISPLAY_NAMES = {"resnet": "ResNet", "c2d": "C2D", "i3d": "I3D", "c2d_nl": "C2D+NL", "i3d_nl": "I3D+NL"}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise ValueError(f"MODEL.ARCH={name!r} is not one of {sorted(ARCHS)}")
    return ARCHS[name]


def display_name(arch: str, alpha: float, depth: int = 50) -> str:
    base = DISPLAY_NAMES.get(arch, arch)
    if arch == "resnet":
        base = f"ResNet-{depth}"
    return f"Oct-{base} (alpha={alpha:g})" if alpha > 0 else base
