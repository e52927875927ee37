#!/usr/bin/env python
"""Write the synthetic motion dataset (real H.264 mp4 files, both annotation styles).

    python tools/make_synthetic_dataset.py OUT_DIR [--num-classes N] [--videos-per-class M] [--seed S]
        [--width W --height H --num-frames F --fps R --noise SIGMA]

The class of a video is the motion of its shape (up, down, sideways, still, ...), never a
single frame. See octvideo/data/synthetic.py and docs/data.md for the layout; train on it with

    DATA.PATH_TO_DATA_DIR OUT_DIR                                            (PySlowFast style)
    DATA.PATH_TO_DATA_DIR OUT_DIR/kinetics DATA.PATH_PREFIX OUT_DIR/videos   (official style)
"""
import argparse
import json

import _path  # noqa: F401

from octvideo.data.synthetic import MAX_CLASSES, make_synthetic_dataset


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created; existing files are overwritten)")
    p.add_argument("--num-classes", type=int, default=4, help=f"number of motion classes, 2..{MAX_CLASSES}")
    p.add_argument("--videos-per-class", type=int, default=50, help="videos per class over train/val/test (70/10/20%%)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> same videos and labels")
    p.add_argument("--width", type=int, default=80, help="frame width in pixels (even)")
    p.add_argument("--height", type=int, default=64, help="frame height in pixels (even)")
    p.add_argument("--num-frames", type=int, default=48, help="frames per video")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the videos")
    p.add_argument("--noise", type=float, default=12.0, help="std of the per-frame background noise (grey levels)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    info = make_synthetic_dataset(
        args.out_dir,
        num_classes=args.num_classes,
        videos_per_class=args.videos_per_class,
        seed=args.seed,
        width=args.width,
        height=args.height,
        num_frames=args.num_frames,
        fps=args.fps,
        noise=args.noise,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({k: info[k] for k in ("out_dir", "class_names", "counts", "num_videos", "seconds")}))
    else:
        print(
            f"{info['num_videos']} videos {info['counts']} ({args.width}x{args.height}, {args.num_frames} frames "
            f"at {args.fps} fps) in {info['seconds']:.1f}s -> {args.out_dir}\n"
            f"classes: {', '.join(info['class_names'])}"
        )


if __name__ == "__main__":
    main()
