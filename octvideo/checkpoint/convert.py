"""Writing octvideo checkpoint files from published layouts (behind tools/convert_checkpoint.py)."""
import logging
from typing import Dict, Optional

from octvideo.models import build_model

from .formats import find_state_dict, open_checkpoint
from .io import CheckpointError, read_checkpoint, read_class_names, save_checkpoint
from .load import _check_exact
from .pytorchvideo import build_reference, compare_logits

logger = logging.getLogger(__name__)


def convert_file(cfg, src: str, dst: str, fmt: Optional[str] = None) -> Dict:
    """Build the model of ``cfg``, load ``src`` into it exactly and save it as an octvideo checkpoint ``dst``.

    ``fmt``: the layout of ``src`` (one of :data:`~.formats.FORMAT_NAMES`); recognised from the keys
    when None. ``src`` must describe exactly the config's model: a renamed copy, every tensor used
    (a 2D image checkpoint for a video model is inflated with tools/inflate.py instead). ``dst``
    holds epoch 0 and no optimizer state: a converted model starts a run, it does not resume one.
    Class names come from ``CLASSNAMES_FILE`` when set. Nothing is written when ``src`` does not fit.
    """
    ckpt = open_checkpoint(src, fmt)
    model = build_model(cfg)
    if ckpt.dims == 2 and model.dims == 3:
        raise CheckpointError(
            f"{src} is a 2D ({ckpt.format}) image checkpoint and MODEL.ARCH {cfg.MODEL.ARCH!r} a video model: "
            f"inflate it with tools/inflate.py --src {src} --cfg ... --out ..."
        )
    _check_exact(ckpt, model)
    model.load_state_dict(ckpt.state, strict=True)
    names = read_class_names(cfg)
    if names is None:
        names = ckpt.meta.get("class_names")
    save_checkpoint(dst, model, epoch=0, iteration=0, cfg=cfg, class_names=names,
                    extra={"converted_from": src, "source_format": ckpt.format})
    return {"model": model, "format": ckpt.format, "output": dst, "num_tensors": len(ckpt.state)}


def verify_pytorchvideo(cfg, src: str, model, batch: int = 2) -> Dict:
    """Logits of ``model`` (converted from the pytorchvideo file ``src``) against pytorchvideo's own
    model holding the original weights, on a random clip of the config's training size."""
    reference = build_reference(cfg.MODEL.ARCH, cfg.MODEL.WIDTH, cfg.MODEL.NUM_CLASSES,
                                (cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES) + (cfg.DATA.TRAIN_CROP_SIZE,) * 2)
    reference.load_state_dict(find_state_dict(read_checkpoint(src), src))
    clip = (cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)
    return compare_logits(model, reference, clip, batch=batch)
