#!/usr/bin/env python
"""Top-5 class names with probabilities for each video (multi-view: TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS).

    python tools/predict.py --cfg configs/oct_i3d.yaml --checkpoint CKPT video1.mp4 [video2.mp4 ...] [--json]
Config overrides go after `--opts`: ... --opts TEST.NUM_SPATIAL_CROPS 1
"""
import argparse
import json
import sys

import _path  # noqa: F401

from octvideo.config import load_config
from octvideo.engine.predict import predict_videos


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("videos", nargs="+")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = p.parse_args(argv)
    cfg = load_config(args.cfg_file, args.opts)
    results = predict_videos(cfg, args.checkpoint, args.videos)
    failed = any("error" in r for r in results)  # exit status 1 when a video could not be decoded
    if args.json:
        print(json.dumps(results, indent=1))
        return int(failed)
    for r in results:
        print(r["video"])
        if "error" in r:
            print(f"  could not be decoded: {r['error']}")
            continue
        for name, prob in r["top5"]:
            print(f"  {prob:7.2%}  {name}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
