#!/usr/bin/env python
"""Inflate a 2D ImageNet (Oct-)ResNet checkpoint into the 3D video model of a config.

    python tools/inflate.py --src 2D_CHECKPOINT --cfg configs/oct_i3d.yaml [KEY VALUE ...] \\
        --out OUT.pyth [--method mean|center]

The source is recognised from its keys: torchvision ResNet (for C2D / I3D / I3D+NL at OCT.ALPHA 0),
octvideo 2D ResNet / Oct-ResNet (the 3D model of the same alpha), d-li14/octconv.pytorch Oct-ResNet
(alpha 0.5 models). --method defaults to TRAIN.CHECKPOINT_INFLATE_METHOD. OUT is an octvideo
checkpoint (epoch 0, no optimizer state) to train from: TRAIN.CHECKPOINT_FILE_PATH OUT.pyth.
A report lists the copied, inflated, newly initialised and unused source tensors. A source of
another alpha or architecture is an error naming each layer and both shapes; nothing is written.
See docs/checkpoints.md.
"""
import argparse
import sys

import _path  # noqa: F401

from octvideo.checkpoint import INFLATE_METHODS, CheckpointError, inflate
from octvideo.config import load_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="2D checkpoint (torchvision, octvideo or octconv-pytorch layout)")
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config of the 3D model")
    p.add_argument("--out", required=True, help="octvideo checkpoint to write (.pyth)")
    p.add_argument("--method", choices=INFLATE_METHODS, default=None,
                   help="mean: I3D, kernel / kt on every tap; center: middle tap only (default: "
                        "TRAIN.CHECKPOINT_INFLATE_METHOD)")
    p.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.cfg_file, args.opts)
    try:
        report = inflate(args.src, cfg, out=args.out, method=args.method)
    except CheckpointError as e:
        print(f"error: {e}\nnothing written to {args.out}", file=sys.stderr)
        return 1
    print(report.format())
    print(f"wrote {args.out} (epoch 0, no optimizer state): train from it with TRAIN.CHECKPOINT_FILE_PATH {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
