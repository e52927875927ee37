#!/usr/bin/env python
"""Convert a published checkpoint (pytorchvideo, torchvision, octconv.pytorch) into an octvideo file.

    # a pytorchvideo Kinetics-400 I3D, renamed, with a logits check against pytorchvideo itself:
    python tools/convert_checkpoint.py --cfg configs/kinetics400/i3d.yaml \\
        --input I3D_8x8_R50.pyth --output i3d_r50_k400.pyth --verify
    # an ImageNet Oct-ResNet-50 inflated into the Oct-I3D of the config (alpha re-split to 0.1):
    python tools/convert_checkpoint.py --cfg configs/oct_i3d.yaml --init \\
        --input oct_resnet50.pth --output oct_i3d_inflated.pyth

Without --init the input must describe exactly the config's model. With --init it initialises the
model as TRAIN.CHECKPOINT_FILE_PATH would (TRAIN.CHECKPOINT_INFLATE / _METHOD). KEY VALUE
overrides follow the options; CLASSNAMES_FILE adds class names to the output. See docs/checkpoints.md.
"""
import argparse
import logging
import sys

import _path  # noqa: F401

from octvideo.checkpoint.convert import convert_file, verify_pytorchvideo
from octvideo.config import load_config

# Relative to the largest logit: float32 rounding of two summation orders stays far below this.
VERIFY_TOLERANCE = 1e-4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config of the octvideo model")
    p.add_argument("--input", required=True, help="checkpoint to convert (any supported layout)")
    p.add_argument("--output", required=True, help="octvideo checkpoint to write (.pyth)")
    p.add_argument("--init", action="store_true", help="initialise (inflate / re-split) instead of an exact copy")
    p.add_argument("--verify", action="store_true", help="compare logits with pytorchvideo (pytorchvideo inputs)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.cfg_file, args.opts)
    result = convert_file(cfg, args.input, args.output, initialise=args.init)
    print(f"wrote {result['output']}: {result['summary']}")
    if args.verify:
        if result["format"] != "pytorchvideo":
            p.error(f"--verify compares with pytorchvideo; {args.input} is in the {result['format'] or 'another'} layout")
        check = verify_pytorchvideo(cfg, args.input, result["model"])
        ok = check["max_abs_diff"] <= VERIFY_TOLERANCE * max(1.0, check["max_abs_logit"])
        print(f"logits vs pytorchvideo: max |diff| {check['max_abs_diff']:.3g} (largest logit "
              f"{check['max_abs_logit']:.3g}), same top-1: {check['same_top1']} -> {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
