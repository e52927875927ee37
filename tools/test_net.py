#!/usr/bin/env python
"""Multi-view test of a checkpoint (TEST.NUM_ENSEMBLE_VIEWS clips x TEST.NUM_SPATIAL_CROPS crops).

    python tools/test_net.py --cfg configs/oct_i3d.yaml TEST.CHECKPOINT_FILE_PATH ckpt.pyth [KEY VALUE ...]

Writes OUTPUT_DIR/test_results.json, test_predictions.json and plots/confusion_matrix.png.
"""
import argparse
import json
import sys

import _path  # noqa: F401

from octvideo.config import add_cfg_args, cfg_from_args
from octvideo.engine import distributed as du
from octvideo.engine import run_test


def main(argv=None):
    parser = add_cfg_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    cfg = cfg_from_args(parser.parse_args(argv))
    summary = run_test(cfg)
    if du.is_launch_main():  # one line per run, not one per process
        print(json.dumps({k: summary[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_failed")}))


if __name__ == "__main__":
    sys.exit(main())
