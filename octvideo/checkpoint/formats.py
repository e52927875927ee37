"""Published checkpoint layouts -> octvideo state-dict keys, one rename table per format.

A format is data: how to recognise its keys and a table of ``(regex, template)`` renames
(the PySlowFast habit of describing architectures as tables, applied to key names). Renaming is
all a converter does: every supported layout computes the same function as the octvideo model
with the same table row, so values are copied untouched and the loaders check shapes.

=================  ====  ==========================================================================
format             dims  source
=================  ====  ==========================================================================
octvideo           2/3   files written by :func:`octvideo.checkpoint.save_checkpoint`
torchvision        2     ``torchvision.models.resnet{50,101}`` ImageNet weights (ResNet v1.5)
octconv-pytorch    2     d-li14/octconv.pytorch ``oct_resnet{26,50,101}`` (alpha 0.5, often
                         saved by the PyTorch ImageNet example: ``{"state_dict": {"module.*"}}``)
pytorchvideo       3     pytorchvideo hub ``c2d_r50`` / ``i3d_r50`` Kinetics-400 files
                         (``{"model_state": {"blocks.*"}}``, the PySlowFast-trained models)
pyslowfast         3     PySlowFast's own PyTorch files (``{"model_state": {"s1.pathway0_stem.*"}}``):
                         C2D / I3D / I3D-NLN R50 8x8 from its model zoo
=================  ====  ==========================================================================

Stage numbering: torchvision's ``layer1..layer4`` and pytorchvideo's stage blocks are octvideo's
``res2..res5`` (the ResNet paper's conv2_x..conv5_x); PySlowFast's ``s2..s5`` already are. In the
bottleneck, pytorchvideo's ``conv_a/b/c`` and PySlowFast's ``branch2.a/b/c`` are ``conv1/2/3``, their
``branch1`` the projection shortcut. Plain convolutions inside blocks are single-path OctConvs,
hence the ``.h2h.weight`` suffix; octconv.pytorch's ``bn_h`` alone is a plain BatchNorm.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .io import FORMAT, CheckpointError, read_checkpoint

Rule = Tuple[str, str]

_P = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"  # a BatchNorm / Linear entry
_PATH = r"(?P<path>h2h|h2l|l2h|l2l)"
_BLOCK = r"layer(?P<layer>[1-4])\.(?P<b>\d+)"

TORCHVISION_RULES: Tuple[Rule, ...] = (
    (r"conv1\.weight", "stem.conv.weight"),
    (rf"bn1\.{_P}", "stem.bn.{p}"),
    (rf"{_BLOCK}\.conv(?P<i>[1-3])\.weight", "res{res}.blocks.{b}.conv{i}.h2h.weight"),
    (rf"{_BLOCK}\.bn(?P<i>[1-3])\.{_P}", "res{res}.blocks.{b}.bn{i}.{p}"),
    (rf"{_BLOCK}\.downsample\.0\.weight", "res{res}.blocks.{b}.shortcut.conv.h2h.weight"),
    (rf"{_BLOCK}\.downsample\.1\.{_P}", "res{res}.blocks.{b}.shortcut.bn.{p}"),
    (r"fc\.(?P<p>weight|bias)", "head.proj.{p}"),
)

OCTCONV_PYTORCH_RULES: Tuple[Rule, ...] = (
    (r"conv1\.weight", "stem.conv.weight"),
    (rf"bn1\.{_P}", "stem.bn.{p}"),
    (rf"{_BLOCK}\.conv(?P<i>[1-3])\.conv\.conv_{_PATH}\.weight", "res{res}.blocks.{b}.conv{i}.{path}.weight"),
    (rf"{_BLOCK}\.conv(?P<i>[1-3])\.bn_(?P<f>[hl])\.{_P}", "res{res}.blocks.{b}.bn{i}.{f}.{p}"),
    (rf"{_BLOCK}\.downsample\.0\.conv\.conv_{_PATH}\.weight", "res{res}.blocks.{b}.shortcut.conv.{path}.weight"),
    (rf"{_BLOCK}\.downsample\.0\.bn_(?P<f>[hl])\.{_P}", "res{res}.blocks.{b}.shortcut.bn.{f}.{p}"),
    (r"fc\.(?P<p>weight|bias)", "head.proj.{p}"),
)

# PySlowFast (slowfast/models: stem_helper.py, resnet_helper.py, nonlocal_helper.py, head_helper.py):
# ``s1`` is the stem (``pathway0_stem``; ``s0_stem`` in its oldest releases), ``s2..s5`` hold
# ``pathway0_res<i>`` blocks and ``pathway0_nonlocal<i>`` after block i, ``head.projection`` is the
# classifier. The Non-local BN is ``bn`` in the released checkpoints, ``norm`` in newer code.
PYSLOWFAST_RULES: Tuple[Rule, ...] = (
    (r"s1\.(?:pathway0|s0)_stem\.conv\.weight", "stem.conv.weight"),
    (rf"s1\.(?:pathway0|s0)_stem\.bn\.{_P}", "stem.bn.{p}"),
    (r"s(?P<s>[2-5])\.pathway0_res(?P<b>\d+)\.branch1\.weight", "res{s}.blocks.{b}.shortcut.conv.h2h.weight"),
    (rf"s(?P<s>[2-5])\.pathway0_res(?P<b>\d+)\.branch1_bn\.{_P}", "res{s}.blocks.{b}.shortcut.bn.{p}"),
    (r"s(?P<s>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.(?P<abc>[abc])\.weight", "res{s}.blocks.{b}.conv{i}.h2h.weight"),
    (rf"s(?P<s>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.(?P<abc>[abc])_bn\.{_P}", "res{s}.blocks.{b}.bn{i}.{p}"),
    (r"s(?P<s>[2-5])\.pathway0_nonlocal(?P<b>\d+)\.conv_(?P<n>theta|phi|g|out)\.(?P<q>weight|bias)",
     "res{s}.nonlocals.{b}.{n}.{q}"),
    (rf"s(?P<s>[2-5])\.pathway0_nonlocal(?P<b>\d+)\.(?:bn|norm)\.{_P}", "res{s}.nonlocals.{b}.bn.{p}"),
    (r"head\.projection\.(?P<p>weight|bias)", "head.proj.{p}"),
)

# Applied after pytorchvideo's ``blocks.<i>`` prefixes are named (see _pytorchvideo_prefixes).
PYTORCHVIDEO_RULES: Tuple[Rule, ...] = (
    (r"stem\.conv\.weight", "stem.conv.weight"),
    (rf"stem\.norm\.{_P}", "stem.bn.{p}"),
    (r"(?P<s>res[2-5])\.res_blocks\.(?P<b>\d+)\.branch1_conv\.weight", "{s}.blocks.{b}.shortcut.conv.h2h.weight"),
    (rf"(?P<s>res[2-5])\.res_blocks\.(?P<b>\d+)\.branch1_norm\.{_P}", "{s}.blocks.{b}.shortcut.bn.{p}"),
    (r"(?P<s>res[2-5])\.res_blocks\.(?P<b>\d+)\.branch2\.conv_(?P<abc>[abc])\.weight", "{s}.blocks.{b}.conv{i}.h2h.weight"),
    (rf"(?P<s>res[2-5])\.res_blocks\.(?P<b>\d+)\.branch2\.norm_(?P<abc>[abc])\.{_P}", "{s}.blocks.{b}.bn{i}.{p}"),
    (r"head\.proj\.(?P<p>weight|bias)", "head.proj.{p}"),
)


def _derived(fields: Dict[str, str]) -> Dict[str, str]:
    """Template fields computed from matched groups: stage number and bottleneck conv index."""
    if fields.get("layer"):
        fields["res"] = str(int(fields["layer"]) + 1)
    if fields.get("abc"):
        fields["i"] = str("abc".index(fields["abc"]) + 1)
    return fields


def _has(keys: Sequence[str], pattern: str) -> bool:
    rx = re.compile(pattern)
    return any(rx.search(k) for k in keys)


def _pytorchvideo_prefixes(keys: Sequence[str]) -> Dict[str, str]:
    """``blocks.<i>.`` -> ``stem.`` / ``res2.`` .. ``res5.`` / ``head.``.

    The block indices depend on the model (c2d/i3d have a parameter-free temporal pool at index 2,
    slow_r50 has none), so stages are found by their ``res_blocks`` children, in order.
    """
    index = lambda k: int(k.split(".")[1])  # noqa: E731
    stages = sorted({index(k) for k in keys if ".res_blocks." in k})
    heads = sorted({index(k) for k in keys if re.match(r"blocks\.\d+\.proj\.", k)})
    if len(stages) != 4 or len(heads) != 1:
        raise CheckpointError(
            f"pytorchvideo layout with {len(stages)} residual stages and {len(heads)} heads; octvideo maps "
            f"exactly 4 stages (res2-res5) and one ResNetBasicHead (models built by create_resnet)"
        )
    names = {0: "stem", heads[0]: "head"}
    names.update({i: f"res{s + 2}" for s, i in enumerate(stages)})
    return {f"blocks.{i}.": f"{name}." for i, name in names.items()}


def _collapse_single_norms(keys: Sequence[str]) -> Dict[str, str]:
    """``<bn>.h.*`` with no ``<bn>.l.*`` is a plain BatchNorm in octvideo (alpha_out = 0): ``<bn>.*``."""
    with_low = {k.rsplit(".l.", 1)[0] for k in keys if re.search(r"\.l\.[a-z_]+$", k)}
    out = {}
    for k in keys:
        m = re.match(r"(.*)\.h\.([a-z_]+)$", k)
        out[k] = f"{m.group(1)}.{m.group(2)}" if m and m.group(1) not in with_low else k
    return out


@dataclass(frozen=True)
class SourceFormat:
    """A published checkpoint layout: how to recognise it and how its keys map to octvideo's."""

    name: str
    dims: int  # 2: image models (inflated for video); 3: video models
    detect: Callable[[Sequence[str]], bool]
    rules: Tuple[Rule, ...] = ()
    prefixes: Optional[Callable[[Sequence[str]], Dict[str, str]]] = None
    post: Optional[Callable[[Sequence[str]], Dict[str, str]]] = None  # a second renaming, on the renamed keys
    doc: str = ""
    example: str = ""  # a key every file of this layout has, for error messages


FORMATS: Tuple[SourceFormat, ...] = (
    SourceFormat(
        "octvideo", 0, lambda keys: _has(keys, r"^stem\.conv\.weight$"),
        doc="octvideo state_dict (any alpha, 2D or 3D)", example="stem.conv.weight",
    ),
    SourceFormat(
        "octconv-pytorch", 2, lambda keys: _has(keys, r"^layer1\.\d+\.conv1\.conv\.conv_h2h\.weight$"),
        OCTCONV_PYTORCH_RULES, post=_collapse_single_norms, doc="d-li14/octconv.pytorch Oct-ResNet",
        example="layer1.0.conv1.conv.conv_h2h.weight",
    ),
    SourceFormat(
        "torchvision", 2, lambda keys: _has(keys, r"^layer1\.0\.conv1\.weight$"),
        TORCHVISION_RULES, doc="torchvision ResNet", example="layer1.0.conv1.weight",
    ),
    SourceFormat(
        "pytorchvideo", 3,
        lambda keys: _has(keys, r"^blocks\.0\.conv\.weight$") and _has(keys, r"\.res_blocks\.\d+\.branch2\."),
        PYTORCHVIDEO_RULES, prefixes=_pytorchvideo_prefixes, doc="pytorchvideo create_resnet (hub c2d_r50 / i3d_r50)",
        example="blocks.1.res_blocks.0.branch2.conv_a.weight",
    ),
    SourceFormat(
        "pyslowfast", 3, lambda keys: _has(keys, r"^s1\.(pathway0|s0)_stem\.conv\.weight$"),
        PYSLOWFAST_RULES, doc="PySlowFast C2D / I3D / I3D-NLN ResNet", example="s1.pathway0_stem.conv.weight",
    ),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)


def find_state_dict(obj, where: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded file: the file itself, or under model_state / state_dict / model.

    Prefixes added by the training wrappers (``module.`` of DataParallel / DDP, ``_orig_mod.`` of
    torch.compile) are removed.
    """
    for _ in range(3):  # e.g. {"state_dict": {"model": {...}}} at most
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
            for prefix in ("module.", "_orig_mod."):
                if all(k.startswith(prefix) for k in state):
                    state = {k[len(prefix):]: v for k, v in state.items()}
            return state
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("model_state", "state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    top = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{where}: no state dict found (a mapping of names to tensors, at the top level or under "
        f"'model_state', 'state_dict' or 'model'); top-level entries: {top}"
    )


def get_format(name: str) -> SourceFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown checkpoint format {name!r}; one of {list(FORMAT_NAMES)}")


def detect_format(keys: Sequence[str], where: str = "checkpoint") -> SourceFormat:
    for fmt in FORMATS:
        if fmt.detect(keys):
            return fmt
    raise CheckpointError(
        f"{where}: unknown checkpoint layout (first keys: {list(keys)[:6]}); supported: "
        + "; ".join(f"{f.name} ({f.doc})" for f in FORMATS)
    )


def rename(
    state: Dict[str, torch.Tensor], fmt: SourceFormat, where: str = "checkpoint"
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """``state`` with ``fmt``'s keys renamed to octvideo's, and {octvideo key: key in the file}.

    Keys no rule covers are an error, so no weight is ever dropped silently.
    """
    if not fmt.rules:
        return dict(state), {k: k for k in state}
    keys = list(state)
    prefixes = fmt.prefixes(keys) if fmt.prefixes else {}
    compiled = [(re.compile(p), t) for p, t in fmt.rules]
    renamed: Dict[str, str] = {}  # key in the file -> octvideo key
    unknown: List[str] = []
    for key in keys:
        name = key
        for old, new in prefixes.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        for rx, template in compiled:
            m = rx.fullmatch(name)
            if m:
                renamed[key] = template.format(**_derived(m.groupdict()))
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{where}: {len(unknown)} key(s) of the {fmt.name} layout have no octvideo counterpart, "
            f"e.g. {unknown[:5]} (octvideo converts ResNet bottleneck models only)"
        )
    if fmt.post:
        second = fmt.post(list(renamed.values()))
        renamed = {k: second[v] for k, v in renamed.items()}
    return {renamed[k]: state[k] for k in keys}, {v: k for k, v in renamed.items()}


@dataclass
class Checkpoint:
    """A checkpoint file read and renamed to octvideo keys."""

    path: str
    format: str
    state: Dict[str, torch.Tensor]
    meta: Dict = field(default_factory=dict)  # the file's other entries (octvideo files) or {}
    origin: Dict[str, str] = field(default_factory=dict)  # octvideo key -> the key's name in the file

    @property
    def dims(self) -> int:
        """2 for image checkpoints, 3 for video (from the stem kernel's rank)."""
        return self.state["stem.conv.weight"].dim() - 2

    def source_name(self, key: str) -> str:
        return self.origin.get(key, key)


def convert_state_dict(
    state: Dict[str, torch.Tensor], where: str = "state dict", fmt: Optional[str] = None
) -> Tuple[str, Dict[str, torch.Tensor], Dict[str, str]]:
    """(format name, state with octvideo keys, {octvideo key: original key}) for a state dict.

    ``fmt`` names the layout (see :data:`FORMAT_NAMES`); None recognises it from the keys. A named
    layout that the keys do not follow is an error saying which layout they do follow.
    """
    keys = list(state)
    if fmt is None:
        source = detect_format(keys, where)
    else:
        source = get_format(fmt)
        if not source.detect(keys):
            try:
                looks = f"its keys follow the {detect_format(keys, where).name} layout"
            except CheckpointError:
                looks = f"first keys: {keys[:4]}"
            raise CheckpointError(
                f"{where} is not a {source.name} checkpoint: it has no key like {source.example!r} ({looks})"
            )
    out, origin = rename(state, source, where)
    if "stem.conv.weight" not in out:
        raise CheckpointError(f"{where}: no stem convolution (stem.conv.weight) after conversion from {source.name}")
    return source.name, out, origin


def open_checkpoint(path: str, fmt: Optional[str] = None) -> Checkpoint:
    """Read ``path`` (any supported layout, loaded weights-only) and rename its keys to octvideo's."""
    raw = read_checkpoint(path)
    state = find_state_dict(raw, path)
    name, converted, origin = convert_state_dict(state, path, fmt)
    meta = {}
    if isinstance(raw, Mapping) and raw.get("format") == FORMAT:
        meta = {k: v for k, v in raw.items() if k != "model_state"}
    return Checkpoint(path, name, converted, meta, origin)
