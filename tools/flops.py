#!/usr/bin/env python
"""Count GFLOPs and parameters of a config's model with fvcore.

    python tools/flops.py --cfg configs/oct_i3d.yaml [KEY VALUE ...] [--json]
    python tools/flops.py --paper       # the paper's Table 8 and Table 2 beside ours
"""
import argparse
import logging

import _path  # noqa: F401

from octvideo.config import load_config
from octvideo.utils import flops_report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", dest="cfg_file", help="YAML config file")
    parser.add_argument("--json", action="store_true", help='print {"gflops": ..., "params_m": ...}')
    parser.add_argument("--paper", action="store_true", help="compare with the paper's Table 8 and Table 2")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    if args.paper:
        print(flops_report.format_paper_table(flops_report.paper_table()))
        return
    if not args.cfg_file:
        parser.error("--cfg FILE is required unless --paper is given")
    result = flops_report.report_config(load_config(args.cfg_file, args.opts))
    print(flops_report.to_json(result) if args.json else flops_report.format_one(result))


if __name__ == "__main__":
    main()
