"""Reports behind ``tools/flops.py``: one config, or the paper's Table 8 / Table 2 side by side."""
import json
from typing import Dict, List

from octvideo.config import get_cfg
from octvideo.models import build_model, display_name

from .flops import conv_macs, count_flops, input_shape_for, paper_gflops

# (MODEL.ARCH, OCT.ALPHA, table) rows of the paper we compare against.
PAPER_ROWS = [
    ("c2d", 0.0, "Table 8"), ("c2d", 0.1, "Table 8"),
    ("i3d", 0.0, "Table 8"), ("i3d", 0.1, "Table 8"), ("i3d", 0.2, "Table 8"), ("i3d", 0.3, "Table 8"),
    ("i3d_nl", 0.0, "Table 8"), ("i3d_nl", 0.1, "Table 8"),
    ("resnet", 0.0, "Table 2"), ("resnet", 0.125, "Table 2"), ("resnet", 0.25, "Table 2"),
    ("resnet", 0.5, "Table 2"), ("resnet", 0.75, "Table 2"),
]


def config_for(arch: str, alpha: float):
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.OCT.ALPHA = arch, alpha
    cfg.MODEL.NUM_CLASSES = 1000 if arch == "resnet" else 400
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = 8, 224
    return cfg


def report_config(cfg) -> Dict:
    model = build_model(cfg)
    shape = input_shape_for(cfg)
    result = count_flops(model, shape)
    result.update(
        model=display_name(cfg.MODEL.ARCH, cfg.OCT.ALPHA, cfg.MODEL.DEPTH),
        input_shape=list(shape),
        paper_gflops=paper_gflops(cfg.MODEL.ARCH, cfg.OCT.ALPHA) if cfg.MODEL.DEPTH == 50 and cfg.MODEL.WIDTH == 64 else None,
    )
    return result


def paper_table() -> List[Dict]:
    rows = []
    for arch, alpha, table in PAPER_ROWS:
        r = report_config(config_for(arch, alpha))
        r["table"] = table
        r["ratio"] = r["gflops"] / r["paper_gflops"]
        rows.append(r)
    return rows


def format_paper_table(rows: List[Dict]) -> str:
    head = (
        f"{'model':<28} {'table':<8} {'input':<16} {'paper':>7} {'ours':>7} {'ours/paper':>10} "
        f"{'conv+fc':>8} {'params(M)':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"][2:])
        lines.append(
            f"{r['model']:<28} {r['table']:<8} {shape:<16} {r['paper_gflops']:>7.2f} {r['gflops']:>7.2f} "
            f"{r['ratio']:>10.3f} {r['conv_linear_gflops']:>8.2f} {r['params_m']:>9.2f}"
        )
    lines.append("GFLOPs by fvcore, one multiply-add = one flop; 'conv+fc' counts convolutions and linear layers only.")
    return "\n".join(lines)


def format_one(r: Dict) -> str:
    shape = "x".join(str(s) for s in r["input_shape"][1:])
    out = [f"{r['model']}: {r['gflops']:.2f} GFLOPs on a {shape} input, {r['params_m']:.2f} M parameters"]
    if r.get("paper_gflops"):
        out.append(f"  paper: {r['paper_gflops']:.2f} GFLOPs (ours/paper = {r['gflops'] / r['paper_gflops']:.3f})")
    for op, g in r["by_operator_gflops"].items():
        out.append(f"  {op:<22} {g:8.3f}")
    return "\n".join(out)


def to_json(r: Dict) -> str:
    return json.dumps({"gflops": round(r["gflops"], 4), "params_m": round(r["params_m"], 4)})


# (MODEL.ARCH, OCT.ALPHA) pairs of the speed benchmark (tools/benchmark.py), vanilla first per group.
BLOCKED_ROWS = [("i3d", 0.0), ("i3d", 0.1), ("i3d", 0.25), ("i3d", 0.5), ("c2d", 0.0), ("c2d", 0.1),
                ("resnet", 0.0), ("resnet", 0.5)]


def blocked_table(channel_block: int, rows=BLOCKED_ROWS) -> List[Dict]:
    """Convolution multiply-adds exact and with output channels rounded to ``channel_block``, and
    both ratios against the vanilla model of the same family (the first row of each arch)."""
    out, base = [], {}
    for arch, alpha in rows:
        cfg = config_for(arch, alpha)
        model = build_model(cfg)
        shape = input_shape_for(cfg)
        exact, blocked = conv_macs(model, shape), conv_macs(model, shape, channel_block)
        base.setdefault(arch, (exact, blocked))
        out.append({"model": display_name(arch, alpha, 50), "exact_gmacs": exact / 1e9, "blocked_gmacs": blocked / 1e9,
                    "exact_ratio": exact / base[arch][0], "blocked_ratio": blocked / base[arch][1]})
    return out


def format_blocked_table(rows: List[Dict], channel_block: int) -> str:
    head = f"{'model':<28} {'conv GMACs':>10} {'ratio':>7} {f'blocked {channel_block}':>11} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<28} {r['exact_gmacs']:>10.2f} {r['exact_ratio']:>7.3f} "
                     f"{r['blocked_gmacs']:>11.2f} {r['blocked_ratio']:>7.3f}")
    lines.append(f"Convolutions only; 'blocked {channel_block}': every convolution's output channels rounded up to a "
                 f"multiple of {channel_block}, the work a blocked CPU kernel (oneDNN) does. Ratios against the vanilla model.")
    return "\n".join(lines)
