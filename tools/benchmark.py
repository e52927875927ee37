#!/usr/bin/env python
"""Speed and memory of vanilla vs Oct networks and layers, side by side (docs/benchmarks.md).

    python tools/benchmark.py [--device cpu|cuda] [--threads N] [--repeats N] [--only models,layers,memory,overhead,gemm]
                              [--groups I3D,C2D,ResNet-50] [--modes inference,fused,train]
                              [--memory-format channels_last|contiguous|both] [--precision fp32|bf16|both]
                              [--models NAMES] [--compile] [--compile-mode MODE] [--markdown | --json]
    python tools/benchmark.py data [ARGS ...]     # data-loading benchmark (octvideo.data.benchmark)

Progress goes to stderr; the tables (or JSON) to stdout. See octvideo/utils/benchmark.py
for the method (interleaved repeats, medians, saved-for-backward bytes).
"""
import argparse
import json
import sys

import _path  # noqa: F401


def _list(value, allowed, name):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"{name}: {', '.join(bad)} not in {', '.join(allowed)}")
    return tuple(items)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "data":
        # Imported here so that the model benchmark does not need the data dependencies.
        from octvideo.data import benchmark as data_benchmark

        return data_benchmark.main(argv[1:])

    from octvideo.config import COMPILE_MODES
    from octvideo.utils import benchmark as bm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: PyTorch's")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds; the median is reported (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--only", default=",".join(bm.DEFAULT_PARTS), type=lambda v: _list(v, bm.PARTS, "--only"),
                        help="comma list of models, layers, memory, overhead, gemm (default: models,layers,memory; "
                             "overhead: host-side events, device kernels, kernel time by kind and, on CUDA, "
                             "CUDA-graph replay per model and mode, a training step captured whole; "
                             "gemm: every 1x1 convolution of a training step, and whole calls, as the models "
                             "run them and as one matrix product on the channels-last view, fp32)")
    parser.add_argument("--groups", default=",".join(bm.MODEL_GROUPS), type=lambda v: _list(v, bm.MODEL_GROUPS, "--groups"),
                        help="model groups (default: I3D,C2D,ResNet-50)")
    parser.add_argument("--modes", default=",".join(bm.MODES), type=lambda v: _list(v, bm.MODES, "--modes"),
                        help="inference (no grad), fused (no grad, BN folded into the convs as TEST.FUSE_CONV_BN; "
                             "models only), train (forward + backward); default: all")
    parser.add_argument("--memory-format", default=None, choices=("channels_last", "contiguous", "both"),
                        help="default: channels_last on CPU, both on CUDA")
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "both"),
                        help="bf16 = torch.autocast; default: fp32 on CPU, both on CUDA")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1,
                        help="clips (images) per model or single-layer call, every mode (default 1; the targets are "
                             "defined at 1 and are not evaluated otherwise)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model (MODEL.COMPILE); the overhead part then profiles the compiled calls")
    parser.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                        help="torch.compile's mode (MODEL.COMPILE_MODE; implies --compile; default: default)")
    parser.add_argument("--models", default="", type=lambda v: tuple(s.strip() for s in v.split(",") if s.strip()),
                        help="comma list of model names to run, as the tables name them (e.g. 'I3D,Oct-I3D a=0.5'); "
                             "default: every model of the groups")
    parser.add_argument("--channel-multiple", type=int, default=1, metavar="M",
                        help="OCT.CHANNEL_MULTIPLE of the octave models: low-frequency widths rounded to multiples "
                             "of M (default 1, the official split; above 1 no target is evaluated)")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP counts (faster), except I3D and Oct-I3D a=0.5: the a=0.5 target's limit is their FLOPs ratio + 0.05")
    parser.add_argument("--markdown", action="store_true", help="markdown tables, ready for docs/benchmarks.md")
    parser.add_argument("--json", action="store_true", help="print every measurement as JSON")
    parser.add_argument("--json-out", metavar="FILE", help="also write every measurement as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    cuda = args.device == "cuda"
    fmt = args.memory_format or ("both" if cuda else "channels_last")
    prec = args.precision or ("both" if cuda else "fp32")
    settings = bm.Settings(
        device=args.device,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        parts=args.only,
        groups=args.groups,
        modes=args.modes,
        memory_formats=("channels_last", "contiguous") if fmt == "both" else (fmt,),
        precisions=("fp32", "bf16") if prec == "both" else (prec,),
        frames=args.frames,
        size=args.size,
        batch=args.batch,
        compile=args.compile or args.compile_mode is not None,
        compile_mode=args.compile_mode or "default",
        models=args.models,
        channel_multiple=args.channel_multiple,
        flops=not args.no_flops,
        progress=None if args.quiet else bm.stderr_progress,
    )
    try:
        result = bm.run(settings)
    except ValueError as e:
        parser.error(str(e))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(bm.to_json(result), f, indent=1)
    if args.json:
        print(json.dumps(bm.to_json(result), indent=1))
    else:
        print(bm.report(result, markdown=args.markdown))


if __name__ == "__main__":
    main()
