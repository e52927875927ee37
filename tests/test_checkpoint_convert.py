"""Published layouts load with the same logits; inflation and octave re-splitting keep the 2D function."""
import json
import os
import re
import sys

import pytest
import torch
import torch.nn as nn
import torchvision
from pytorchvideo.models.hub import resnet as hub

from octvideo import checkpoint as cu
from octvideo.checkpoint import CheckpointError
from octvideo.config import load_config
from octvideo.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a swapped or skipped BN changes the logits."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def cfg_for(small_cfg, arch, alpha, width=8, depth=26, num_classes=7):
    cfg = small_cfg(arch=arch, alpha=alpha, width=width, depth=depth, num_classes=num_classes)
    cfg.MODEL.DROPOUT_RATE = 0.0
    return cfg


def close(a, b, rel=1e-5):
    return (a - b).abs().max().item() <= rel * max(1.0, b.abs().max().item())


# --------------------------------------------------------------------------- pytorchvideo
@pytest.mark.parametrize("arch,builder", [("c2d", hub.c2d_r50), ("i3d", hub.i3d_r50)])
def test_pytorchvideo_checkpoint_gives_the_same_logits(small_cfg, tmp_path, arch, builder):
    # The hub architecture at width 8; (4, 2, 2) is the res5 map of an 8 x 64 x 64 clip.
    torch.manual_seed(0)
    reference = randomize(builder(stem_dim_out=8, model_num_class=7, head_pool_kernel_size=(4, 2, 2), dropout_rate=0.0))
    path = str(tmp_path / f"{arch}.pyth")
    torch.save({"model_state": reference.state_dict(), "epoch": 196}, path)  # PySlowFast-style file
    model = build_model(cfg_for(small_cfg, arch, 0.0, depth=50)).eval()
    info = cu.load_checkpoint(path, model)
    assert info["format"] == "pytorchvideo"
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert close(model(x), reference(x))


def test_full_size_pytorchvideo_i3d_converts_with_the_tool_and_verifies(tmp_path, capsys):
    # The published I3D R50 layout (64 wide, 400 classes); a 96 px clip keeps the check cheap.
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import convert_checkpoint

    torch.manual_seed(0)
    reference = randomize(hub.i3d_r50(head_pool_kernel_size=(4, 3, 3)))
    src, dst = str(tmp_path / "I3D_8x8_R50.pyth"), str(tmp_path / "i3d_octvideo.pyth")
    torch.save({"model_state": reference.state_dict()}, src)
    names = tmp_path / "classes.json"
    names.write_text(json.dumps([f"class {i}" for i in range(400)]))
    rc = convert_checkpoint.main([
        "--cfg", os.path.join(ROOT, "configs/kinetics400/i3d.yaml"), "--input", src, "--output", dst, "--verify",
        "DATA.TRAIN_CROP_SIZE", "96", "CLASSNAMES_FILE", str(names)])
    out = capsys.readouterr().out
    assert rc == 0 and "-> OK" in out, out
    cfg = load_config(os.path.join(ROOT, "configs/kinetics400/i3d.yaml"))
    model = build_model(cfg)
    info = cu.load_checkpoint(dst, model)  # an octvideo file now, loadable exactly
    assert info["format"] == "octvideo" and info["class_names"][399] == "class 399"
    x = torch.randn(1, 3, 8, 96, 96)
    with torch.no_grad():
        assert close(model.eval()(x), reference(x))


# --------------------------------------------------------------------------- 2D layouts
def test_torchvision_resnet50_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    tv = randomize(torchvision.models.resnet50())
    path = str(tmp_path / "resnet50.pth")
    torch.save(tv.state_dict(), path)  # torchvision files are bare state dicts
    model = build_model(load_config(os.path.join(ROOT, "configs/imagenet/resnet50.yaml"))).eval()
    assert cu.load_checkpoint(path, model)["format"] == "torchvision"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert close(model(x), tv(x))


def _octconv_pytorch_name(key: str) -> str:
    """octvideo key -> d-li14/octconv.pytorch key (its oct_resnet.py / octconv.py module names)."""
    key = re.sub(r"^stem\.conv\.", "conv1.", key)
    key = re.sub(r"^stem\.bn\.", "bn1.", key)
    key = re.sub(r"^head\.proj\.", "fc.", key)
    key = re.sub(r"^res(\d)\.blocks\.", lambda m: f"layer{int(m.group(1)) - 1}.", key)
    key = re.sub(r"\.shortcut\.conv\.(h2h|h2l|l2h|l2l)\.", r".downsample.0.conv.conv_\1.", key)
    key = re.sub(r"\.shortcut\.bn\.(h|l)\.", r".downsample.0.bn_\1.", key)
    key = re.sub(r"\.shortcut\.bn\.", ".downsample.0.bn_h.", key)  # alpha_out 0: only bn_h exists
    key = re.sub(r"\.conv(\d)\.(h2h|h2l|l2h|l2l)\.", r".conv\1.conv.conv_\2.", key)
    key = re.sub(r"\.bn(\d)\.(h|l)\.", r".conv\1.bn_\2.", key)
    key = re.sub(r"\.bn(\d)\.", r".conv\1.bn_h.", key)
    return key


def test_octconv_pytorch_checkpoint_loads_every_tensor(small_cfg, tmp_path):
    torch.manual_seed(0)
    source = randomize(build_model(cfg_for(small_cfg, "resnet", 0.5)))
    theirs = {"module." + _octconv_pytorch_name(k): v for k, v in source.state_dict().items()}
    assert "module.layer1.0.conv1.conv.conv_h2l.weight" in theirs and "module.layer4.1.conv1.bn_h.weight" in theirs
    path = str(tmp_path / "oct_resnet26.pth.tar")
    torch.save({"epoch": 100, "arch": "oct_resnet26", "state_dict": theirs}, path)  # PyTorch ImageNet example
    model = build_model(cfg_for(small_cfg, "resnet", 0.5))
    assert cu.load_checkpoint(path, model)["format"] == "octconv.pytorch"
    got, want = model.state_dict(), source.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


# --------------------------------------------------------------------------- inflation
def _save_2d(small_cfg, tmp_path, alpha, name="r2d.pyth"):
    torch.manual_seed(0)
    model2d = randomize(build_model(cfg_for(small_cfg, "resnet", alpha)))
    return model2d, cu.save_checkpoint(str(tmp_path / name), model2d)


def test_center_inflated_oct_i3d_sees_a_static_clip_as_the_2d_network(small_cfg, tmp_path):
    model2d, path = _save_2d(small_cfg, tmp_path, alpha=0.25)
    cfg = cfg_for(small_cfg, "i3d", 0.25)
    cfg.TRAIN.CHECKPOINT_FILE_PATH, cfg.TRAIN.CHECKPOINT_INFLATE, cfg.TRAIN.CHECKPOINT_INFLATE_METHOD = path, True, "center"
    torch.manual_seed(1)
    model3d = build_model(cfg)
    head_before = model3d.head.proj.weight.clone()
    report = cu.load_pretrained_for_training(cfg, model3d.eval())
    assert report.skipped == ["head.proj.weight", "head.proj.bias"] and torch.equal(model3d.head.proj.weight, head_before)
    frame = torch.randn(2, 3, 64, 64)
    clip = frame[:, :, None].repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        f2d = model2d.forward_features(frame)  # (N, C, h, w)
        f3d = model3d.forward_features(clip)  # (N, C, T', h, w)
    assert f3d.shape[2] == 2 and all(close(f3d[:, :, t], f2d) for t in range(2))


def test_mean_inflation_keeps_the_2d_response_inside_a_static_clip(small_cfg, tmp_path):
    model2d, path = _save_2d(small_cfg, tmp_path, alpha=0.25)
    model3d = build_model(cfg_for(small_cfg, "i3d", 0.25)).eval()
    report = cu.initialise_from(path, model3d, inflate=True, inflate_method="mean")
    assert "stem.conv.weight" in report.inflated
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, :, None].repeat(1, 1, 5, 1, 1)
    with torch.no_grad():
        # The stem (5 x 7 x 7) and res2's first conv (3 x 1 x 1, plain -> octave): in the middle
        # frame every tap sees a real frame, so the temporal mean is the 2D kernel.
        s2d, s3d = model2d.stem.conv(frame), model3d.stem.conv(clip)
        assert close(s3d[:, :, 2], s2d)
        h2d, l2d = model2d.res2.blocks[0].conv1(s2d)
        h3d, l3d = model3d.res2.blocks[0].conv1(s2d[:, :, None].repeat(1, 1, 3, 1, 1))
        assert model3d.res2.blocks[0].conv1.kernel_size[0] == 3
        assert close(h3d[:, :, 1], h2d) and close(l3d[:, :, 1], l2d)
        assert not close(h3d[:, :, 0], h2d)  # the border frame sees the zero padding


def test_torchvision_resnet50_inflated_into_c2d_matches_on_a_static_clip(tmp_path):
    torch.manual_seed(0)
    tv = randomize(torchvision.models.resnet50())
    path = str(tmp_path / "resnet50.pth")
    torch.save(tv.state_dict(), path)
    cfg = load_config(os.path.join(ROOT, "configs/kinetics400/c2d.yaml"),
                      ["TRAIN.CHECKPOINT_FILE_PATH", path, "TRAIN.CHECKPOINT_INFLATE", "True"])
    model = build_model(cfg).eval()
    cu.load_pretrained_for_training(cfg, model)
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled2d = nn.Sequential(*list(tv.children())[:-1])(frame).flatten(1)
        pooled3d = model.forward_features(frame[:, :, None].repeat(1, 1, 2, 1, 1)).flatten(2).mean(-1)
    assert close(pooled3d, pooled2d)


def test_resplitting_octaves_keeps_every_weight(small_cfg, tmp_path):
    torch.manual_seed(0)
    plain = randomize(build_model(cfg_for(small_cfg, "resnet", 0.0)))
    octave = build_model(cfg_for(small_cfg, "resnet", 0.5))
    report = cu.transfer_weights(plain.state_dict(), octave)
    assert not (report.missing or report.mismatched or report.unused)
    # High channels first, as OctConv splits them: res2's first conv1 is plain -> (high, low).
    w = plain.res2.blocks[0].conv1.h2h.weight
    conv = octave.res2.blocks[0].conv1
    assert torch.equal(conv.h2h.weight, w[: conv.out_high]) and torch.equal(conv.h2l.weight, w[conv.out_high:])
    back = build_model(cfg_for(small_cfg, "resnet", 0.0)).eval()
    cu.transfer_weights(octave.state_dict(), back)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), plain(x))


# --------------------------------------------------------------------------- fine-tuning rules
def test_finetuning_takes_the_backbone_and_reinitialises_a_different_classifier(small_cfg, tmp_path):
    torch.manual_seed(0)
    reference = randomize(hub.i3d_r50(stem_dim_out=8, model_num_class=7, head_pool_kernel_size=(4, 2, 2)))
    path = str(tmp_path / "i3d_k400.pyth")
    torch.save({"model_state": reference.state_dict()}, path)
    exact = build_model(cfg_for(small_cfg, "i3d", 0.0, depth=50))
    cu.load_checkpoint(path, exact)
    cfg = cfg_for(small_cfg, "i3d", 0.0, depth=50, num_classes=5)
    cfg.TRAIN.CHECKPOINT_FILE_PATH = path
    model = build_model(cfg)
    report = cu.load_pretrained_for_training(cfg, model)
    assert [k for k, _, _ in report.mismatched] == ["head.proj.weight", "head.proj.bias"]
    got, want = model.state_dict(), exact.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("head."))


def test_wrong_initialisation_settings_are_explained(small_cfg, tmp_path):
    _, path2d = _save_2d(small_cfg, tmp_path, alpha=0.0)
    path3d = cu.save_checkpoint(str(tmp_path / "i3d.pyth"), build_model(cfg_for(small_cfg, "i3d", 0.0)))
    video = build_model(cfg_for(small_cfg, "i3d", 0.25))
    with pytest.raises(CheckpointError, match="r2d.pyth is a 2D .* set TRAIN.CHECKPOINT_INFLATE True"):
        cu.initialise_from(path2d, video, inflate=False)
    with pytest.raises(CheckpointError, match="i3d.pyth is a 3D .* set TRAIN.CHECKPOINT_INFLATE False"):
        cu.initialise_from(path3d, video, inflate=True)
    deeper = build_model(cfg_for(small_cfg, "i3d", 0.25, depth=50))
    with pytest.raises(CheckpointError, match=r"cannot initialise the model's backbone.*MODEL.DEPTH 26 in the checkpoint, 50"):
        cu.initialise_from(path3d, deeper, inflate=False)
    with pytest.raises(ValueError, match="must be one of \\('mean', 'center'\\); got 'middle'"):
        cu.initialise_from(path2d, video, inflate=True, inflate_method="middle")
