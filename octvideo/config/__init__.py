"""Config system: fvcore CfgNode defaults, YAML files with ``_BASE_``, KEY VALUE overrides."""
import argparse
import os
from typing import List, Optional, Sequence

from fvcore.common.config import CfgNode

from .defaults import COMPILE_MODES, get_defaults

__all__ = ["COMPILE_MODES", "CfgNode", "get_cfg", "load_config", "add_cfg_args", "ConfigError"]


class ConfigError(ValueError):
    """A config file or override that cannot be applied (unknown key, bad value, missing file)."""


def get_cfg() -> CfgNode:
    """The default config (a fresh, mutable copy)."""
    return get_defaults()


def load_config(cfg_file: Optional[str] = None, opts: Optional[Sequence[str]] = None) -> CfgNode:
    """Defaults, then ``cfg_file`` (with its ``_BASE_`` chain), then ``KEY VALUE`` overrides.

    Raises :class:`ConfigError` naming the file or the key when something does not apply.
    """
    cfg = get_cfg()
    if cfg_file:
        if not os.path.isfile(cfg_file):
            raise ConfigError(f"config file not found: {cfg_file!r}")
        try:
            cfg.merge_from_file(cfg_file)
        except KeyError as e:  # yacs: "Non-existent config key: X"
            raise ConfigError(f"{cfg_file}: {e.args[0] if e.args else e}") from None
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"overrides must come in KEY VALUE pairs; got an odd list: {opts}")
    try:
        cfg.merge_from_list(opts)
    except KeyError as e:
        raise ConfigError(f"override: {e.args[0] if e.args else e}") from None
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"override {opts}: {e}") from None
    _check(cfg)
    return cfg


def _check(cfg: CfgNode) -> None:
    if not 0.0 <= cfg.OCT.ALPHA < 1.0:
        raise ConfigError(f"OCT.ALPHA must be in [0, 1); got {cfg.OCT.ALPHA}")
    multiple = cfg.OCT.CHANNEL_MULTIPLE
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ConfigError(f"OCT.CHANNEL_MULTIPLE must be a positive int; got {multiple!r}")
    if cfg.TRAIN.MIXED_PRECISION not in ("none", "fp16", "bf16"):
        raise ConfigError(
            f"TRAIN.MIXED_PRECISION must be 'none', 'fp16' or 'bf16'; got {cfg.TRAIN.MIXED_PRECISION!r}"
        )
    if cfg.MODEL.COMPILE_MODE not in COMPILE_MODES:
        raise ConfigError(
            f"MODEL.COMPILE_MODE must be one of {', '.join(COMPILE_MODES)}; got {cfg.MODEL.COMPILE_MODE!r}"
        )
    if cfg.DATA.DECODER not in ("decord", "pyav"):
        raise ConfigError(f"DATA.DECODER must be 'decord' or 'pyav'; got {cfg.DATA.DECODER!r}")
    if cfg.SOLVER.LR_POLICY not in ("cosine", "steps"):
        raise ConfigError(f"SOLVER.LR_POLICY must be 'cosine' or 'steps'; got {cfg.SOLVER.LR_POLICY!r}")


def add_cfg_args(parser: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    """``--cfg FILE`` plus trailing ``KEY VALUE`` overrides, as every tool takes them."""
    parser.add_argument("--cfg", dest="cfg_file", required=required, help="YAML config file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return parser


def cfg_from_args(args: argparse.Namespace) -> CfgNode:
    return load_config(args.cfg_file, args.opts)
