#!/usr/bin/env python
"""Convert a published checkpoint into an octvideo checkpoint file of the config's model.

    python tools/convert_checkpoint.py --src FILE --format pytorchvideo|pyslowfast|torchvision|octconv-pytorch \\
        --cfg CONFIG [KEY VALUE ...] --out OUT.pyth [--verify]

    # pytorchvideo's Kinetics-400 I3D, with a logits check against pytorchvideo itself:
    python tools/convert_checkpoint.py --src I3D_8x8_R50.pyth --format pytorchvideo \\
        --cfg configs/kinetics400/i3d.yaml --out i3d_r50_k400.pyth --verify
    # PySlowFast's I3D-NLN:
    python tools/convert_checkpoint.py --src I3D_NLN_8x8_R50.pyth --format pyslowfast \\
        --cfg configs/kinetics400/i3d_nl.yaml --out i3d_nl_r50_k400.pyth

The source must describe exactly the config's model (every tensor used, every shape equal);
without --format its layout is recognised from the keys. A 2D image checkpoint for a video model
is inflated with tools/inflate.py instead. CLASSNAMES_FILE adds class names to the output.
--verify (pytorchvideo sources) compares the logits of both libraries. See docs/checkpoints.md.
"""
import argparse
import sys

import _path  # noqa: F401

from octvideo.checkpoint import FORMAT_NAMES, CheckpointError
from octvideo.checkpoint.convert import convert_file, verify_pytorchvideo
from octvideo.config import load_config

# Relative to the largest logit: float32 rounding of two summation orders stays far below this.
VERIFY_TOLERANCE = 1e-4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="checkpoint to convert")
    p.add_argument("--format", choices=[f for f in FORMAT_NAMES if f != "octvideo"], default=None,
                   help="layout of --src (default: recognised from its keys)")
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config of the octvideo model")
    p.add_argument("--out", required=True, help="octvideo checkpoint to write (.pyth)")
    p.add_argument("--verify", action="store_true", help="compare logits with pytorchvideo (pytorchvideo sources)")
    p.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.cfg_file, args.opts)
    try:
        result = convert_file(cfg, args.src, args.out, fmt=args.format)
    except CheckpointError as e:
        print(f"error: {e}\nnothing written to {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {result['output']}: all {result['num_tensors']} tensors of the {result['format']} file")
    if args.verify:
        if result["format"] != "pytorchvideo":
            p.error(f"--verify compares with pytorchvideo; {args.src} is in the {result['format']} layout")
        check = verify_pytorchvideo(cfg, args.src, result["model"])
        ok = check["max_abs_diff"] <= VERIFY_TOLERANCE * max(1.0, check["max_abs_logit"])
        print(f"logits vs pytorchvideo: max |diff| {check['max_abs_diff']:.3g} (largest logit "
              f"{check['max_abs_logit']:.3g}), same top-1: {check['same_top1']} -> {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
