"""Config: defaults, YAML files with _BASE_, KEY VALUE overrides, clear errors."""
import glob
import os

import pytest

from octvideo.config import ConfigError, load_config
from octvideo.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "path,arch,alpha,classes",
    [
        ("configs/oct_i3d.yaml", "i3d", 0.1, 400),
        ("configs/kinetics400/c2d.yaml", "c2d", 0.0, 400),
        ("configs/kinetics400/oct_c2d.yaml", "c2d", 0.1, 400),
        ("configs/kinetics400/i3d.yaml", "i3d", 0.0, 400),
        ("configs/kinetics400/oct_i3d.yaml", "i3d", 0.1, 400),
        ("configs/kinetics400/i3d_nl.yaml", "i3d_nl", 0.0, 400),
        ("configs/kinetics400/oct_i3d_nl.yaml", "i3d_nl", 0.1, 400),
        ("configs/kinetics600/i3d.yaml", "i3d", 0.0, 600),
        ("configs/kinetics600/oct_i3d.yaml", "i3d", 0.1, 600),
        ("configs/imagenet/resnet50.yaml", "resnet", 0.0, 1000),
        ("configs/imagenet/oct_resnet50.yaml", "resnet", 0.5, 1000),
    ],
)
def test_shipped_configs(path, arch, alpha, classes):
    cfg = load_config(os.path.join(ROOT, path))
    assert (cfg.MODEL.ARCH, cfg.OCT.ALPHA, cfg.MODEL.NUM_CLASSES) == (arch, alpha, classes)
    assert cfg.DATA.NUM_FRAMES == (1 if arch == "resnet" else 8)


def test_every_config_file_loads_and_builds():
    files = [f for f in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)]
    assert len(files) >= 13  # + the demo config once it lands
    for f in files:
        cfg = load_config(f, ["MODEL.WIDTH", "16", "MODEL.DEPTH", "26"])
        build_model(cfg)


def test_overrides_and_base_inheritance(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("MODEL:\n  ARCH: c2d\n  NUM_CLASSES: 10\nSOLVER:\n  BASE_LR: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nMODEL:\n  NUM_CLASSES: 20\n")
    cfg = load_config(str(child), ["SOLVER.BASE_LR", "0.25", "OCT.ALPHA", "0.1"])
    assert (cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.SOLVER.BASE_LR, cfg.OCT.ALPHA) == ("c2d", 20, 0.25, 0.1)


def test_unknown_keys_are_errors_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  ARCHITECTURE: i3d\n")
    with pytest.raises(ConfigError, match="MODEL.ARCHITECTURE"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="SOLVER.LR"):
        load_config(None, ["SOLVER.LR", "0.1"])
    with pytest.raises(ConfigError, match="odd"):
        load_config(None, ["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="OCT.ALPHA"):
        load_config(None, ["OCT.ALPHA", "1.0"])
    # torch.compile's modes only; the message names the key and the value given
    with pytest.raises(ConfigError, match="MODEL.COMPILE_MODE .*'reduce_overhead'"):
        load_config(None, ["MODEL.COMPILE_MODE", "reduce_overhead"])
    assert load_config(None, ["MODEL.COMPILE_MODE", "reduce-overhead"]).MODEL.COMPILE_MODE == "reduce-overhead"
