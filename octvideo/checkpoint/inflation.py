"""2D -> 3D inflation, and the one rule for initialising a model from another checkpoint.

:func:`inflate` turns a 2D ImageNet (Oct-)ResNet checkpoint into the 3D video model of a config
(paper §4.4; I3D, Carreira & Zisserman 2017 §2.4); :func:`transfer_state` is the rule behind it and
behind ``TRAIN.CHECKPOINT_FILE_PATH``. Tensor by tensor, over the target model's state dict:

* **copied** -- same name and shape in the source: BN parameters and statistics, 1-D tensors, and
  every tensor of a 3D source (fine-tuning);
* **inflated** -- a 2D kernel ``(O, I, k, k)`` for a 3D one ``(O, I, kt, k, k)`` (kt = 1 included):

  - ``mean``: the kernel repeated over the ``kt`` taps and divided by ``kt`` (the I3D recipe);
  - ``center``: the kernel on the middle tap (``kt // 2``), zeros on the others;

* **newly initialised** -- kept as the model built them: Non-local blocks (absent from 2D
  sources; their final BN is zero-initialised, so each block is the identity and the inflated
  network still computes the 2D function), the classifier when the source's class count differs
  (or it has none; a notice says so), ``num_batches_tracked`` counters a source lacks;
* **unused** -- source tensors nothing took: only ever the source's classifier, when it was not copied.

Anything else is an alpha or architecture mismatch -- a backbone tensor missing from the source,
one of another shape (an alpha 0.5 source for an alpha 0.1 model, a plain source for an Oct model,
another depth or width), a backbone tensor the model does not have -- and raises
:class:`CheckpointError` naming each layer with both shapes, before anything is loaded or written.
Octaves are never re-split: a different split is a different network, not an initialisation of
this one.

What inflation preserves (tested exactly in tests/test_checkpoint_convert.py), in eval mode, for a
clip of T identical frames, each equal to the image ``x``:

* ``center``: every layer processes each frame exactly as the 2D layer processes ``x`` -- only
  the centre tap is non-zero, so the temporal zero padding multiplies zeros. The temporal max pool
  after res2 takes the max of two equal frames and the head averages equal frames, so the logits
  are the 2D model's logits on ``x``, for C2D, I3D, I3D+NL and their Oct versions alike. (For any
  clip, not only a static one, each frame before the temporal pool is the 2D network's
  features of that frame.)
* ``mean``: an inflated kernel at frame t sums the 2D kernel's response to the frames its taps
  cover, divided by kt. Taps that fall on the zero padding contribute nothing, so on a static clip
  a layer's output at frame t is ``n_t / kt`` times the 2D response (before BN), ``n_t`` being the
  number of taps on real frames: the 2D response exactly at the frames at least ``kt // 2`` from
  both ends, a scaled one at the border frames. BN, ReLU and later layers carry that border
  difference inwards, ``kt // 2`` frames further per temporal kernel (the temporal pool halves frame
  indices): the 3D features equal the 2D features exactly at the output frames whose whole temporal
  receptive field lies inside the clip, and differ at the others. For the ResNet-26 I3D rows on 24
  frames that is res5 frames 5 and 6 of 12; for the ResNet-50 I3D on its 8 frames no frame
  qualifies, so the logits differ from the 2D logits. C2D has kt = 1 everywhere, where ``mean`` and
  ``center`` give the same weights: its logits are the 2D ones with either method.
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .formats import Checkpoint, open_checkpoint
from .io import CheckpointError, model_info, read_class_names, save_checkpoint, unwrap_model

logger = logging.getLogger(__name__)

INFLATE_METHODS = ("mean", "center")
_HEAD = "head."
_NONLOCAL = re.compile(r"^res\d\.nonlocals\.")
_SHOW = 8  # tensors named per category in an error


def inflate_kernel(weight: torch.Tensor, frames: int, method: str = "mean") -> torch.Tensor:
    """A 2D kernel (O, I, kh, kw) -> 3D (O, I, frames, kh, kw) by ``method`` (see the module docstring)."""
    if method not in INFLATE_METHODS:
        raise ValueError(f"inflation method must be one of {INFLATE_METHODS}; got {method!r}")
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D kernel of rank 4 (O, I, kh, kw); got shape {tuple(weight.shape)}")
    if method == "mean":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    out = weight.new_zeros(weight.shape[:2] + (frames,) + weight.shape[2:])
    out[:, :, frames // 2] = weight
    return out


def _grouped(keys: Sequence[str]) -> List[str]:
    """``a.b.weight, a.b.bias`` -> ``a.b.{weight, bias}``: every name, one module per line."""
    modules: Dict[str, List[str]] = {}
    for k in keys:
        module, _, leaf = k.rpartition(".")
        modules.setdefault(module, []).append(leaf)
    lines = []
    for module, leaves in modules.items():
        leaf = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        lines.append(f"{module}.{leaf}" if module else leaf)
    return lines


@dataclass
class TransferReport:
    """What :func:`transfer_state` did. Names are the model's keys, except ``unused`` (the source's own)."""

    source: str = ""
    source_format: str = ""
    method: Optional[str] = None  # the inflation method, None when the source was already 3D
    copied: List[str] = field(default_factory=list)
    inflated: List[str] = field(default_factory=list)
    initialised: List[str] = field(default_factory=list)  # newly initialised: the model's own values kept
    unused: List[str] = field(default_factory=list)  # source tensors nothing took (the unmatched classifier)
    notes: List[str] = field(default_factory=list)
    kernels: Dict[str, str] = field(default_factory=dict)  # inflated key -> "7x7 -> 5x7x7"

    def summary(self) -> str:
        how = f" ({self.method})" if self.method else ""
        return (f"{len(self.copied)} copied, {len(self.inflated)} inflated{how}, {len(self.initialised)} newly "
                f"initialised, {len(self.unused)} unused source tensors")

    def format(self) -> str:
        """The full report: counts, then every tensor by category (one module per line)."""
        lines = [f"{self.source} ({self.source_format}): {self.summary()}"]
        sections = (
            ("copied", self.copied, _grouped(self.copied)),
            (f"inflated with {self.method}" if self.method else "inflated", self.inflated,
             [f"{k}  {self.kernels.get(k, '')}".rstrip() for k in self.inflated]),
            ("newly initialised", self.initialised, _grouped(self.initialised)),
            ("unused source tensors", self.unused, _grouped(self.unused)),
        )
        for title, keys, items in sections:
            lines.append(f"{title} ({len(keys)}):" + ("" if keys else " none"))
            lines.extend(f"  {item}" for item in items)
        lines.extend(f"notice: {n}" for n in self.notes)
        return "\n".join(lines)


def _shape(t: Optional[torch.Tensor]) -> str:
    return "absent" if t is None else str(tuple(t.shape))


def _is_optional(key: str) -> bool:
    """Tensors a source may lack: the classifier, Non-local blocks, BN batch counters."""
    return key.startswith(_HEAD) or bool(_NONLOCAL.match(key)) or key.endswith(".num_batches_tracked")


def _stage_depths(keys) -> Tuple[int, ...]:
    depth: Dict[int, int] = {}
    for k in keys:
        m = re.match(r"^res(\d)\.blocks\.(\d+)\.", k)
        if m:
            depth[int(m[1])] = max(depth.get(int(m[1]), 0), int(m[2]) + 1)
    return tuple(depth[s] for s in sorted(depth))


def _octave_split(state: Dict[str, torch.Tensor], bn: str) -> Optional[Tuple[int, int]]:
    """(high, low) channels of the BN ``bn``: ``<bn>.h/.l.weight``, or ``<bn>.weight`` alone (low = 0)."""
    if f"{bn}.h.weight" in state:
        low = state.get(f"{bn}.l.weight")
        return state[f"{bn}.h.weight"].numel(), 0 if low is None else low.numel()
    if f"{bn}.weight" in state:
        return state[f"{bn}.weight"].numel(), 0
    return None


def _diagnosis(state: Dict[str, torch.Tensor], model: nn.Module) -> List[str]:
    """Sentences naming the config keys on which the source and the model differ, where visible."""
    target = model.state_dict()
    info = model_info(model)
    hints = []
    src_split, dst_split = _octave_split(state, "res2.blocks.0.bn1"), _octave_split(target, "res2.blocks.0.bn1")
    if src_split and dst_split and src_split != dst_split and sum(src_split) == sum(dst_split):
        a = src_split[1] / sum(src_split)
        hints.append(
            f"the source splits res2.blocks.0.bn1's {sum(src_split)} channels into {src_split[0]} high + "
            f"{src_split[1]} low (alpha {a:.2g}), the model into {dst_split[0]} + {dst_split[1]} "
            f"(OCT.ALPHA {info['alpha']:g}, OCT.CHANNEL_MULTIPLE {info['channel_multiple']}): set OCT.ALPHA "
            f"and OCT.CHANNEL_MULTIPLE to the source's split (published Oct-ResNets use multiple 1), or use a "
            f"source of this split"
        )
    src_depths, dst_depths = _stage_depths(state), _stage_depths(target)
    if src_depths and src_depths != dst_depths:
        hints.append(f"the source has {src_depths} blocks per stage, the model {dst_depths} (MODEL.DEPTH {info['depth']})")
    stem = state.get("stem.conv.weight")
    if stem is not None and stem.shape[0] != info["width"]:
        hints.append(f"the source's stem has {stem.shape[0]} channels, the model's {info['width']} (MODEL.WIDTH)")
    src_nl = any(_NONLOCAL.match(k) for k in state)
    if src_nl and not any(_NONLOCAL.match(k) for k in target):
        hints.append(f"the source has Non-local blocks and MODEL.ARCH {info['arch']!r} has none")
    return hints


def transfer_state(ckpt: Checkpoint, model: nn.Module, method: Optional[str] = None) -> TransferReport:
    """Load ``ckpt`` (octvideo keys) into ``model`` by the rules of the module docstring.

    ``method`` ("mean" / "center") inflates the 2D kernels of a 2D source into a 3D model; it is
    required then and ignored for a source of the model's own dimensionality. Raises
    :class:`CheckpointError` listing every tensor that does not fit, before touching the model.
    """
    model = unwrap_model(model)
    state, target = ckpt.state, model.state_dict()
    inflating = ckpt.dims == 2 and model.dims == 3
    if ckpt.dims != model.dims and not inflating:
        raise CheckpointError(
            f"{ckpt.path} is a {ckpt.dims}D ({ckpt.format}) checkpoint and the model is {model.dims}D; "
            f"a video checkpoint cannot initialise an image model"
        )
    if inflating and method not in INFLATE_METHODS:
        raise ValueError(f"inflation method (TRAIN.CHECKPOINT_INFLATE_METHOD / --method) must be one of "
                         f"{INFLATE_METHODS}; got {method!r}")
    report = TransferReport(source=ckpt.path, source_format=ckpt.format, method=method if inflating else None)

    head_keys = [k for k in target if k.startswith(_HEAD)]
    head_fits = bool(head_keys) and all(k in state and state[k].shape == target[k].shape for k in head_keys)
    new_state: Dict[str, torch.Tensor] = {}
    used = set()
    reshaped: List[str] = []  # "layer: source (shape), model (shape)"
    not_in_source: List[str] = []
    not_in_model: List[str] = []

    def named(key: str) -> str:
        original = ckpt.source_name(key)
        return key if original == key else f"{key} ({original} in the source)"

    for key, t in target.items():
        s = state.get(key)
        if key.startswith(_HEAD) and not head_fits:
            report.initialised.append(key)
            continue
        if s is None:
            if _is_optional(key):
                report.initialised.append(key)
            else:
                not_in_source.append(f"{key}: absent from the source, model {_shape(t)}")
            continue
        used.add(key)  # matched by name, whatever its shape
        if s.shape == t.shape:
            new_state[key] = s.to(t.dtype)
            report.copied.append(key)
        elif inflating and s.dim() == 4 and t.dim() == 5 and s.shape == t.shape[:2] + t.shape[3:]:
            new_state[key] = inflate_kernel(s, t.shape[2], method).to(t.dtype)
            report.inflated.append(key)
            report.kernels[key] = "x".join(map(str, s.shape[2:])) + " -> " + "x".join(map(str, t.shape[2:]))
        else:
            reshaped.append(f"{named(key)}: source {_shape(s)}, model {_shape(t)}")
    for key in state:
        if key in used:
            continue
        if key.startswith(_HEAD):
            report.unused.append(ckpt.source_name(key))
        else:
            not_in_model.append(f"{named(key)}: source {_shape(state[key])}, absent from the model")
    if reshaped or not_in_source or not_in_model:
        lines = []
        for title, items in (("shape mismatches", reshaped), ("absent from the source", not_in_source),
                             ("absent from the model", not_in_model)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:_SHOW])
                if len(items) > _SHOW:
                    lines.append(f"  ... and {len(items) - _SHOW} more")
        hints = _diagnosis(state, model)
        raise CheckpointError(
            f"{ckpt.path} ({ckpt.format}) does not fit the model of the config (alpha or architecture mismatch):\n  "
            + "\n  ".join(lines) + ("\n" + "; ".join(hints) + "." if hints else "")
        )

    if not head_fits and head_keys:
        src_w = state.get("head.proj.weight")
        if src_w is None:
            note = "the source has no classifier: head.proj keeps its fresh initialisation"
        else:
            note = (f"the source's classifier has {src_w.shape[0]} classes and the model "
                    f"{target['head.proj.weight'].shape[0]} (MODEL.NUM_CLASSES): head.proj is freshly initialised; "
                    f"the source's classifier ({', '.join(report.unused)}) is not used")
        report.notes.append(note)
        logger.warning(f"{ckpt.path}: {note}")
    # Keys of new_state all come from the model's own state dict; the rest keep their values.
    model.load_state_dict(new_state, strict=False)
    return report


def inflate(
    src: Union[str, Checkpoint],
    cfg,
    out: Optional[str] = None,
    method: Optional[str] = None,
    model: Optional[nn.Module] = None,
) -> TransferReport:
    """Inflate the 2D checkpoint ``src`` into the 3D model of ``cfg``; write it to ``out`` when given.

    ``src``: a path (torchvision, octvideo or octconv-pytorch layout, recognised from its keys).
    ``method``: "mean" or "center"; by default ``cfg.TRAIN.CHECKPOINT_INFLATE_METHOD``.
    ``model``: the model of ``cfg`` to fill in place (built from ``cfg`` when None).
    ``out`` becomes an octvideo checkpoint with epoch 0 and no optimizer state -- a start for
    ``TRAIN.CHECKPOINT_FILE_PATH``, never a run to resume -- holding the config and, when
    ``CLASSNAMES_FILE`` is set, the class names. Returns the :class:`TransferReport`.

    Raises :class:`CheckpointError` (nothing written) for a source that is not 2D or does not fit
    the model -- another alpha, depth, width -- naming each layer with both shapes.
    """
    from octvideo.models import build_model  # models do not import checkpoint code; keep it that way

    method = method or cfg.TRAIN.CHECKPOINT_INFLATE_METHOD
    if method not in INFLATE_METHODS:
        raise ValueError(f"inflation method must be one of {INFLATE_METHODS}; got {method!r}")
    ckpt = src if isinstance(src, Checkpoint) else open_checkpoint(src)
    model = build_model(cfg) if model is None else unwrap_model(model)
    if model.dims != 3:
        raise CheckpointError(
            f"MODEL.ARCH {cfg.MODEL.ARCH!r} builds a {model.dims}D model; inflation makes a 3D video model "
            f"(c2d, i3d, i3d_nl, ...)"
        )
    if ckpt.dims != 2:
        raise CheckpointError(
            f"{ckpt.path} is a {ckpt.dims}D ({ckpt.format}) checkpoint; inflation takes a 2D image checkpoint. "
            f"A 3D checkpoint of this model needs no inflation: use it as TRAIN.CHECKPOINT_FILE_PATH directly"
        )
    report = transfer_state(ckpt, model, method)
    if out:
        save_checkpoint(
            out, model, epoch=0, iteration=0, cfg=cfg, class_names=read_class_names(cfg),
            extra={"inflated_from": ckpt.path, "source_format": ckpt.format, "inflate_method": method},
        )
    return report
