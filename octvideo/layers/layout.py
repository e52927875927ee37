"""Memory-layout helpers shared by the octave layers and the pools."""
import torch


def _channels_innermost(x: torch.Tensor) -> bool:
    """True for channels_last(_3d) memory, or a channel slice of it (channels have stride 1)."""
    return x.dim() in (4, 5) and x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()


def _memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """The memory format to allocate a tensor like ``t`` in (channels last if its channels are innermost)."""
    if _channels_innermost(t):
        return torch.channels_last_3d if t.dim() == 5 else torch.channels_last
    return torch.contiguous_format
