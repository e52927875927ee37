"""Initialising a model from weights of another shape: 2D -> 3D inflation and octave re-splitting.

Two steps, so every pair of (source, target) alpha and 2D/3D works the same way:

1. :func:`dense_state_dict` merges each OctConv's paths into the one convolution it factorises
   (paper §3.2, eq. 4: ``W = [[W_HH, W_LH], [W_HL, W_LL]]``): output and input channels ordered
   high first, then low, as OctConv splits them (``low = int(alpha * C)`` last channels). Octave
   batch norms are concatenated the same way. A plain model is already dense.
2. :func:`transfer_weights` cuts the dense tensors back along the *target* model's splits and,
   for a 3D target with a 2D (or temporally 1-wide) source, inflates every kernel in time (I3D,
   Carreira & Zisserman 2017 §2.4):

   * ``mean``: the 2D kernel repeated over the ``kt`` frames and divided by ``kt``; a static
     clip then gives the 2D responses (away from the temporal zero padding at the clip ends).
   * ``center``: the 2D kernel on the middle frame, zeros elsewhere; each frame is then processed
     exactly as the 2D network would, whatever the clip.

With the same alpha on both sides step 2 gives back the source's tensors unchanged. With a
different alpha (the paper inflates an alpha 0.5 ImageNet Oct-ResNet-50 into alpha 0.1 video
models; a vanilla ResNet-50 may also initialise an Oct model) every weight is kept, only the
boundary between the octaves moves; the network then computes a different function and is
fine-tuned from there.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .io import unwrap_model

INFLATE_METHODS = ("mean", "center")
_CONV_PATH = re.compile(r"^(?P<module>.+)\.(?P<path>h2h|h2l|l2h|l2l)\.(?P<p>weight|bias)$")
_NORM_BRANCH = re.compile(r"^(?P<module>.+)\.(?P<f>h|l)\.(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)$")


def _split_sizes(paths: Dict[str, torch.Tensor]) -> Tuple[int, int, int, int]:
    """(out_high, out_low, in_high, in_low) of an OctConv from the weights of its paths."""
    def rows(*names):
        return next((paths[n].shape[0] for n in names if n in paths), 0)

    def cols(*names):
        return next((paths[n].shape[1] for n in names if n in paths), 0)

    return rows("h2h", "l2h"), rows("h2l", "l2l"), cols("h2h", "h2l"), cols("l2h", "l2l")


def dense_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Octave state dict -> one tensor per module: ``<conv>.weight`` (O, I, *k), ``<bn>.weight`` (C,) ...

    Keys of plain modules pass through. A missing path (e.g. no ``l2h`` when the input has no low
    part) is a zero block, which is what the missing path contributes.
    """
    convs: Dict[str, Dict[str, Dict[str, torch.Tensor]]] = {}
    norms: Dict[str, Dict[str, Dict[str, torch.Tensor]]] = {}
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _CONV_PATH.match(key)
        if m:
            convs.setdefault(m["module"], {}).setdefault(m["p"], {})[m["path"]] = value
            continue
        m = _NORM_BRANCH.match(key)
        if m:
            norms.setdefault(m["module"], {}).setdefault(m["p"], {})[m["f"]] = value
            continue
        out[key] = value
    for module, params in convs.items():
        w = params["weight"]
        oh, ol, ih, il = _split_sizes(w)
        ref = next(iter(w.values()))
        dense = ref.new_zeros((oh + ol, ih + il) + tuple(ref.shape[2:]))
        blocks = {"h2h": (slice(0, oh), slice(0, ih)), "h2l": (slice(oh, None), slice(0, ih)),
                  "l2h": (slice(0, oh), slice(ih, None)), "l2l": (slice(oh, None), slice(ih, None))}
        for path, tensor in w.items():
            dense[blocks[path]] = tensor
        out[f"{module}.weight"] = dense
        if "bias" in params:  # both paths into an output octave add their biases
            b = ref.new_zeros(oh + ol)
            for path, tensor in params["bias"].items():
                b[blocks[path][0]] += tensor
            out[f"{module}.bias"] = b
    for module, params in norms.items():
        for p, branches in params.items():
            if p == "num_batches_tracked":
                out[f"{module}.{p}"] = branches.get("h", next(iter(branches.values())))
            else:
                out[f"{module}.{p}"] = torch.cat([branches[f] for f in ("h", "l") if f in branches])
    return out


def inflate_kernel(weight: torch.Tensor, frames: int, method: str = "mean") -> torch.Tensor:
    """A 2D kernel (O, I, kh, kw) -> 3D (O, I, frames, kh, kw) by ``method`` (see module docstring)."""
    if method not in INFLATE_METHODS:
        raise ValueError(f"inflation method must be one of {INFLATE_METHODS}; got {method!r}")
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D kernel of rank 4 (O, I, kh, kw); got shape {tuple(weight.shape)}")
    if method == "mean":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    out = weight.new_zeros(weight.shape[:2] + (frames,) + weight.shape[2:])
    out[:, :, frames // 2] = weight
    return out


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, tensor by tensor (keys of the target model)."""

    loaded: List[str] = field(default_factory=list)
    inflated: List[str] = field(default_factory=list)  # subset of loaded
    missing: List[str] = field(default_factory=list)  # not in the source: initialisation kept
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)  # (key, source, target)
    skipped: List[str] = field(default_factory=list)  # excluded on purpose (e.g. the ImageNet classifier)
    unused: List[str] = field(default_factory=list)  # dense source keys nothing in the target took

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded ({len(self.inflated)} of them inflated from 2D)"]
        for name, items in (("kept initialisation (not in the source)", self.missing),
                            ("kept initialisation (shape differs)", [k for k, _, _ in self.mismatched]),
                            ("skipped", self.skipped), ("unused source tensors", self.unused)):
            if items:
                parts.append(f"{name}: {_modules(items)}")
        return "; ".join(parts)


def _modules(keys: Sequence[str], limit: int = 6) -> str:
    """Short description of a key list by module (``head.proj``, ``res3.nonlocals.1`` ...)."""
    mods = []
    for k in keys:
        m = k.rsplit(".", 1)[0]
        m = re.sub(r"\.(h2h|h2l|l2h|l2l|h|l)$", "", m)
        if m not in mods:
            mods.append(m)
    more = f" and {len(mods) - limit} more" if len(mods) > limit else ""
    return ", ".join(mods[:limit]) + more


def _target_slices(model: nn.Module, key: str) -> Tuple[str, Tuple[slice, ...]]:
    """The dense key a target entry comes from and the (rows, cols) to cut out of it."""
    m = _CONV_PATH.match(key)
    if m:
        conv = model.get_submodule(m["module"])
        rows = slice(0, conv.out_high) if m["path"][-1] == "h" else slice(conv.out_high, None)
        cols = slice(0, conv.in_high) if m["path"][0] == "h" else slice(conv.in_high, None)
        return f"{m['module']}.{m['p']}", (rows, cols) if m["p"] == "weight" else (rows,)
    m = _NORM_BRANCH.match(key)
    if m:
        bn = model.get_submodule(m["module"])
        if m["p"] == "num_batches_tracked":
            return f"{m['module']}.{m['p']}", ()
        high = bn.h.num_features
        return f"{m['module']}.{m['p']}", ((slice(0, high),) if m["f"] == "h" else (slice(high, None),))
    return key, ()


def _dense_channels(model: nn.Module, key: str, target: torch.Tensor) -> Tuple[int, ...]:
    """Channel counts the dense source tensor must have for ``key`` (full widths of the module)."""
    m = _CONV_PATH.match(key)
    if m:
        conv = model.get_submodule(m["module"])
        return (conv.out_channels, conv.in_channels) if m["p"] == "weight" else (conv.out_channels,)
    m = _NORM_BRANCH.match(key)
    if m and m["p"] != "num_batches_tracked":
        bn = model.get_submodule(m["module"])
        return (bn.h.num_features + bn.l.num_features,)
    return tuple(target.shape[:2]) if target.dim() >= 2 else tuple(target.shape)


def transfer_weights(
    source: Dict[str, torch.Tensor],
    model: nn.Module,
    inflate_method: str = "mean",
    skip: Sequence[str] = (),
) -> TransferReport:
    """Load ``source`` (octvideo keys, any alpha, 2D or 3D) into ``model``, re-splitting octaves and
    inflating kernels as needed. Entries the source lacks or whose shape cannot be matched keep the
    model's initialisation and are listed in the returned report; ``skip`` lists key prefixes that
    are never loaded (e.g. ``"head."``).
    """
    if inflate_method not in INFLATE_METHODS:
        raise ValueError(f"TRAIN.CHECKPOINT_INFLATE_METHOD must be one of {INFLATE_METHODS}; got {inflate_method!r}")
    model = unwrap_model(model)
    dense = dense_state_dict(source)
    target = model.state_dict()
    report = TransferReport()
    new_state = {}
    used = set()
    for key, t in target.items():
        if any(key.startswith(s) for s in skip):
            report.skipped.append(key)
            continue
        dense_key, cut = _target_slices(model, key)
        src = dense.get(dense_key)
        if src is None:
            report.missing.append(key)
            continue
        need = _dense_channels(model, key, t)
        if tuple(src.shape[: len(need)]) != need:
            report.mismatched.append((key, tuple(src.shape), tuple(t.shape)))
            continue
        value = src[cut] if cut else src
        inflated = False
        if t.dim() == 5 and value.dim() == 4:
            value, inflated = inflate_kernel(value, t.shape[2], inflate_method), True
        elif t.dim() == 5 and value.dim() == 5 and value.shape[2] == 1 and t.shape[2] > 1:
            value, inflated = inflate_kernel(value[:, :, 0], t.shape[2], inflate_method), True
        if tuple(value.shape) != tuple(t.shape):
            report.mismatched.append((key, tuple(src.shape), tuple(t.shape)))
            continue
        new_state[key] = value.to(dtype=t.dtype)
        used.add(dense_key)
        report.loaded.append(key)
        if inflated:
            report.inflated.append(key)
    report.unused = sorted(k for k in dense if k not in used and not any(k.startswith(s) for s in skip))
    model.load_state_dict(new_state, strict=False)
    return report
