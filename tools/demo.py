#!/usr/bin/env python
"""`make demo`: the main job end to end on the CPU, no Kinetics needed.

1. generates the synthetic motion dataset (tools/make_synthetic_dataset.py) when missing;
2. trains a small Oct-I3D (configs/demo/synthetic_oct_i3d.yaml) with tools/train_net.py's engine;
3. runs the 30-view test on held-out videos and prints the results and the run folder.

    python tools/demo.py [--data-dir data/synthetic] [KEY VALUE ...]
"""
import argparse
import logging
import os
import shutil
import sys
import time

import _path  # noqa: F401

from octvideo.config import load_config
from octvideo.data.synthetic import make_synthetic_dataset
from octvideo.engine import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(ROOT, "configs", "demo", "synthetic_oct_i3d.yaml")


def _reset_stale_run(cfg, new_data: bool) -> None:
    """The demo resumes its own interrupted run, but never one of other data or another config.

    Its run folder (OUTPUT_DIR) is the demo's own: when the dataset was just (re)generated, or
    the folder's checkpoints were written under another config (check_resume_config), it is
    cleared so that `make demo` trains from scratch instead of refusing to start.
    """
    from octvideo.checkpoint import find_last_checkpoint
    from octvideo.engine.trainer import check_resume_config

    out = cfg.OUTPUT_DIR
    last = find_last_checkpoint(out) if os.path.isdir(out) else None
    if not last:
        return
    reason = "the dataset was just generated" if new_data else None
    if reason is None:
        try:
            check_resume_config(last, cfg, logging.getLogger("octvideo.demo"))
        except ValueError:
            reason = "its checkpoints come from another config"
    if reason:
        print(f"clearing the previous demo run in {out}: {reason}", flush=True)
        shutil.rmtree(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", default=DEMO_CFG)
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "synthetic"))
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = p.parse_args(argv)
    t0 = time.time()
    generated = False
    if not os.path.exists(os.path.join(args.data_dir, "train.csv")):
        print(f"generating the synthetic motion dataset in {args.data_dir} ...", flush=True)
        info = make_synthetic_dataset(args.data_dir, num_classes=4, videos_per_class=args.videos_per_class, seed=0, progress=True)
        print(f"  {info['num_videos']} videos {info['counts']} in {info['seconds']:.1f}s", flush=True)
        generated = True
    cfg = load_config(args.cfg_file, ["DATA.PATH_TO_DATA_DIR", args.data_dir] + list(args.opts))
    if not os.path.isabs(cfg.OUTPUT_DIR):
        cfg.OUTPUT_DIR = os.path.join(ROOT, cfg.OUTPUT_DIR)
    _reset_stale_run(cfg, new_data=generated)
    summary = train(cfg)
    test = summary.get("test", {})
    print()
    print("=" * 72)
    print(f"demo finished in {time.time() - t0:.0f}s")
    if test:
        print(
            f"30-view test on {test['num_videos']} held-out videos: top-1 {test['top1']:.1f}%, "
            f"top-5 {test['top5']:.1f}%, mean class accuracy {test['mean_class_accuracy']:.1f}% "
            f"({test['num_failed']} failed)"
        )
    print(f"run folder: {cfg.OUTPUT_DIR} (log.txt, metrics.jsonl, checkpoints/, plots/, test_results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
