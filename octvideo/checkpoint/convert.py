"""Writing octvideo checkpoint files from other layouts (behind tools/convert_checkpoint.py)."""
import json
import logging
from typing import Dict, List, Optional

from iopath.common.file_io import g_pathmgr

from octvideo.models import build_model

from .formats import find_state_dict
from .io import read_checkpoint, save_checkpoint
from .load import initialise_from, load_checkpoint
from .pytorchvideo import build_reference, compare_logits

logger = logging.getLogger(__name__)


def _class_names(cfg, found: Optional[List[str]]) -> Optional[List[str]]:
    if cfg.CLASSNAMES_FILE:
        with g_pathmgr.open(cfg.CLASSNAMES_FILE, "r") as f:
            names = json.load(f)
        if not isinstance(names, list) or len(names) != cfg.MODEL.NUM_CLASSES:
            raise ValueError(
                f"CLASSNAMES_FILE {cfg.CLASSNAMES_FILE!r} must hold a JSON list of MODEL.NUM_CLASSES="
                f"{cfg.MODEL.NUM_CLASSES} names; got {len(names) if isinstance(names, list) else type(names).__name__}"
            )
        return names
    return found


def convert_file(cfg, src: str, dst: str, initialise: bool = False) -> Dict:
    """Build the model of ``cfg``, fill it from ``src`` and save it as an octvideo checkpoint ``dst``.

    ``initialise=False``: ``src`` must describe exactly this model (a renamed copy, e.g. a published
    pytorchvideo I3D). ``initialise=True``: ``src`` initialises it as ``TRAIN.CHECKPOINT_FILE_PATH``
    would (inflation per ``TRAIN.CHECKPOINT_INFLATE(_METHOD)``, alpha re-split); the file can then
    be shared and used with ``TRAIN.CHECKPOINT_INFLATE False``.
    Class names come from ``CLASSNAMES_FILE`` when set, else from ``src`` (octvideo files).
    """
    model = build_model(cfg)
    if initialise:
        report = initialise_from(src, model, bool(cfg.TRAIN.CHECKPOINT_INFLATE), cfg.TRAIN.CHECKPOINT_INFLATE_METHOD)
        info = {"class_names": None, "format": None}
        summary = report.summary()
    else:
        info = load_checkpoint(src, model)
        summary = f"all {len(model.state_dict())} tensors"
    names = _class_names(cfg, info.get("class_names"))
    save_checkpoint(dst, model, cfg=cfg, class_names=names)
    return {"model": model, "summary": summary, "format": info.get("format"), "output": dst}


def verify_pytorchvideo(cfg, src: str, model, batch: int = 2) -> Dict:
    """Logits of ``model`` (converted from the pytorchvideo file ``src``) against pytorchvideo's own
    model holding the original weights, on a random clip of the config's training size."""
    reference = build_reference(cfg.MODEL.ARCH, cfg.MODEL.WIDTH, cfg.MODEL.NUM_CLASSES,
                                (cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES) + (cfg.DATA.TRAIN_CROP_SIZE,) * 2)
    reference.load_state_dict(find_state_dict(read_checkpoint(src), src))
    clip = (cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)
    return compare_logits(model, reference, clip, batch=batch)
