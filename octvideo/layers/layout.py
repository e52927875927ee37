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


def function_output(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of its own (not a view) over the same memory, for a custom Function to return.

    Autograd forbids in-place changes to a view that a custom ``autograd.Function`` made in its
    forward and returned (its own view + in-place logic would bypass the Function's
    backward), so ``torch.relu_(out)`` or ``out += x`` on such an output raises. The pools and
    convolutions of the octave layers make their outputs through views (a 2D kernel on the
    frames folded into the batch, then reshaped back), so their Functions return this instead:
    the same storage, sizes and strides, no copy. (The view's base is a temporary of the
    Function that nothing else holds.)
    """
    if t._base is None:
        return t
    return t.new_empty((0,)).set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())
