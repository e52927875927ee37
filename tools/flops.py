#!/usr/bin/env python
"""Count GFLOPs and parameters of a config's model with fvcore.

    python tools/flops.py --cfg configs/oct_i3d.yaml [KEY VALUE ...] [--json]
    python tools/flops.py --paper       # the paper's Table 8 and Table 2 beside ours
    python tools/flops.py --channel-block 16   # conv work with output channels in blocks of 16
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
    parser.add_argument("--channel-block", type=int, default=0, metavar="N",
                        help="conv multiply-adds with output channels rounded up to N (oneDNN: 16 on AVX-512), "
                             "for the benchmarked models, or for --cfg's model")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    if args.paper:
        print(flops_report.format_paper_table(flops_report.paper_table()))
        return
    if args.channel_block < 0:
        parser.error(f"--channel-block must be >= 1; got {args.channel_block}")
    if args.channel_block and not args.cfg_file:
        print(flops_report.format_blocked_table(flops_report.blocked_table(args.channel_block), args.channel_block))
        return
    if not args.cfg_file:
        parser.error("--cfg FILE is required unless --paper is given")
    cfg = load_config(args.cfg_file, args.opts)
    result = flops_report.report_config(cfg)
    print(flops_report.to_json(result) if args.json else flops_report.format_one(result))
    if args.channel_block:
        from octvideo.models import build_model
        from octvideo.utils.flops import conv_macs, input_shape_for

        model, shape = build_model(cfg), input_shape_for(cfg)
        exact, blocked = conv_macs(model, shape), conv_macs(model, shape, args.channel_block)
        print(f"  conv multiply-adds {exact / 1e9:.3f} G; with output channels in blocks of {args.channel_block}: "
              f"{blocked / 1e9:.3f} G ({blocked / exact:.3f}x)")


if __name__ == "__main__":
    main()
