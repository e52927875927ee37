#!/usr/bin/env python
"""Train (and by default test) a model.

    python tools/train_net.py --cfg configs/oct_i3d.yaml [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/train_net.py --cfg configs/oct_i3d.yaml
    torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT --nproc_per_node 8 tools/train_net.py --cfg ...

Rerunning the same command after an interruption resumes from the last complete checkpoint.
"""
import argparse
import json
import sys

import _path  # noqa: F401

from octvideo.config import add_cfg_args, cfg_from_args
from octvideo.engine import distributed as du
from octvideo.engine import train


def main(argv=None):
    parser = add_cfg_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    cfg = cfg_from_args(parser.parse_args(argv))
    summary = train(cfg)
    if "test" in summary:
        t = summary["test"]
        if du.is_launch_main():  # one line per run, not one per process
            print(json.dumps({k: t[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_failed")}))


if __name__ == "__main__":
    sys.exit(main())
