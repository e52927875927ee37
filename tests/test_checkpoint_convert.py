"""Published layouts and 2D -> 3D inflation: the right names, the same function, mismatches refused.

Sources are synthesised with each layout's key names and shapes and random values (no download):
torchvision's own ResNet class, pytorchvideo's own hub builders, and -- for octconv.pytorch and
PySlowFast, which are not installed -- key sets enumerated here from their published code.
"""
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
    """Non-trivial BN statistics and affine parameters (and classifier), so a swapped, skipped or
    rescaled tensor changes the logits."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
        elif isinstance(m, nn.Linear):
            m.weight.data.copy_(0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def cfg_for(small_cfg, arch, alpha, width=8, depth=26, num_classes=7):
    cfg = small_cfg(arch=arch, alpha=alpha, width=width, depth=depth, num_classes=num_classes)
    cfg.MODEL.DROPOUT_RATE = 0.0
    return cfg


def close(a, b, rtol=1e-4):
    """Equal up to float32 rounding: |a - b| <= rtol * the largest |b| (logits of very different sizes)."""
    return a.shape == b.shape and (a - b).abs().max().item() <= rtol * max(1.0, b.abs().max().item())


def static_clip(frame: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, T, H, W): T copies of the frame (the "boring video")."""
    return frame[:, :, None].repeat(1, 1, frames, 1, 1)


def tool(name):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import importlib

    return importlib.import_module(name)


def random_2d(small_cfg, tmp_path, alpha, name="r2d.pyth", seed=0, **kw):
    """A random octvideo 2D (Oct-)ResNet of ``alpha`` and its checkpoint file."""
    torch.manual_seed(seed)
    model2d = randomize(build_model(cfg_for(small_cfg, "resnet", alpha, **kw)), seed)
    return model2d, cu.save_checkpoint(str(tmp_path / name), model2d)


# --------------------------------------------------------------------------- the boring video
@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("arch", ["c2d", "i3d", "i3d_nl", "c2d_nl"])
def test_center_inflation_reproduces_the_2d_logits_on_a_static_clip(small_cfg, tmp_path, arch, alpha):
    model2d, path = random_2d(small_cfg, tmp_path, alpha)
    cfg = cfg_for(small_cfg, arch, alpha)
    torch.manual_seed(1)
    model3d = build_model(cfg).eval()
    report = cu.inflate(path, cfg, method="center", model=model3d)
    nonlocal_keys = [k for k in model3d.state_dict() if ".nonlocals." in k]
    assert bool(nonlocal_keys) == arch.endswith("_nl")  # depth 26 keeps res3/res4 block 1's Non-local
    assert sorted(report.initialised) == sorted(nonlocal_keys) and report.unused == []
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model2d(frame)
        for frames in (4, 5):
            assert close(model3d(static_clip(frame, frames)), expected), frames


def test_center_inflated_frames_are_2d_features_for_any_clip(small_cfg, tmp_path):
    """Before the temporal pool, frame t of a center-inflated model is the 2D network on frame t."""
    model2d, path = random_2d(small_cfg, tmp_path, 0.25)
    cfg = cfg_for(small_cfg, "i3d", 0.25)
    model3d = build_model(cfg).eval()
    cu.inflate(path, cfg, method="center", model=model3d)
    clip = torch.randn(1, 3, 4, 32, 32)  # four different frames
    with torch.no_grad():
        x3, x2 = model3d.res2(model3d.stem(clip)), [model2d.res2(model2d.stem(clip[:, :, t])) for t in range(4)]
    for t in range(4):
        assert close(x3[0][:, :, t], x2[t][0], 1e-5) and close(x3[1][:, :, t], x2[t][1], 1e-5)


def test_mean_inflated_layers_scale_the_border_frames_by_the_taps_on_real_frames(small_cfg, tmp_path):
    model2d, path = random_2d(small_cfg, tmp_path, 0.25)
    cfg = cfg_for(small_cfg, "i3d", 0.25)
    model3d = build_model(cfg).eval()
    cu.inflate(path, cfg, method="mean", model=model3d)
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        # Stem: kt = 5, padding 2. On 4 equal frames the taps on real frames are 3, 4, 4, 3 of 5.
        s2d, s3d = model2d.stem.conv(frame), model3d.stem.conv(static_clip(frame, 4))
        for t, taps in enumerate((3, 4, 4, 3)):
            assert close(s3d[:, :, t], s2d * taps / 5, 1e-5), t
        # res2's first conv1: an OctConv (plain -> high, low) with kt = 3; on 5 equal frames the
        # middle three see 3 of 3 taps, the first and last 2 of 3.
        conv2d, conv3d = model2d.res2.blocks[0].conv1, model3d.res2.blocks[0].conv1
        assert conv3d.kernel_size[0] == 3
        h2d, l2d = conv2d(s2d)
        h3d, l3d = conv3d(static_clip(s2d, 5))
        for t, taps in enumerate((2, 3, 3, 3, 2)):
            assert close(h3d[:, :, t], h2d * taps / 3, 1e-5) and close(l3d[:, :, t], l2d * taps / 3, 1e-5), t


@pytest.mark.parametrize("arch,alpha", [("i3d", 0.0), ("i3d", 0.25), ("i3d_nl", 0.25)])
def test_mean_inflation_is_exact_only_where_the_receptive_field_stays_inside_the_clip(small_cfg, tmp_path, arch, alpha):
    """ResNet-26 I3D on 24 equal frames. Frames whose features equal the 2D ones, layer by layer:
    stem (kt 5) 2..21; res2 (kt 3, 3) 4..19; temporal pool (2, stride 2) -> 12 frames, 2..9;
    res3 (3, 1) 3..8; res4 (3, 1) 4..7; res5 (1, 3) 5..6."""
    model2d, path = random_2d(small_cfg, tmp_path, alpha)
    cfg = cfg_for(small_cfg, arch, alpha)
    model3d = build_model(cfg).eval()
    cu.inflate(path, cfg, method="mean", model=model3d)
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        f2d = model2d.forward_features(frame)
        f3d = model3d.forward_features(static_clip(frame, 24))
        logits2d, logits3d = model2d(frame), model3d(static_clip(frame, 24))
    assert f3d.shape[2] == 12
    exact = [t for t in range(12) if close(f3d[:, :, t], f2d, 1e-5)]
    assert exact == [5, 6]
    assert not close(logits3d, logits2d, 1e-3)  # the mean over all 12 frames includes the border ones


def test_c2d_mean_and_center_inflation_are_the_same_model(small_cfg, tmp_path):
    """C2D's temporal kernels are all 1, where both methods copy the 2D kernel."""
    model2d, path = random_2d(small_cfg, tmp_path, 0.25)
    cfg = cfg_for(small_cfg, "c2d", 0.25)
    by_mean, by_center = build_model(cfg).eval(), build_model(cfg).eval()
    cu.inflate(path, cfg, method="mean", model=by_mean)
    cu.inflate(path, cfg, method="center", model=by_center)
    a, b = by_mean.state_dict(), by_center.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if ".nonlocals." not in k)
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert close(by_mean(static_clip(frame, 4)), model2d(frame))


# --------------------------------------------------------------------------- the report and the tool
def test_inflate_tool_writes_a_start_checkpoint_and_reports_every_tensor(small_cfg, tmp_path, capsys):
    model2d, src = random_2d(small_cfg, tmp_path, 0.25, num_classes=5)
    out = str(tmp_path / "oct_i3d_nl.pyth")
    rc = tool("inflate").main([
        "--src", src, "--cfg", os.path.join(ROOT, "configs/kinetics400/oct_i3d_nl.yaml"),
        "MODEL.WIDTH", "8", "MODEL.DEPTH", "26", "OCT.ALPHA", "0.25", "MODEL.NUM_CLASSES", "7",
        "--out", out, "--method", "center"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    saved = torch.load(out, weights_only=True)
    assert saved["epoch"] == 0 and saved["iteration"] == 0 and "optimizer_state" not in saved
    assert saved["extra"]["inflate_method"] == "center" and "ARCH: i3d_nl" in saved["cfg"]

    # The categories, derived from the model itself: every 5-D tensor outside the Non-local blocks
    # is an inflated kernel; Non-local blocks and the 7-class classifier (the source has 5) are new.
    cfg = load_config(os.path.join(ROOT, "configs/kinetics400/oct_i3d_nl.yaml"),
                      ["MODEL.WIDTH", "8", "MODEL.DEPTH", "26", "OCT.ALPHA", "0.25", "MODEL.NUM_CLASSES", "7"])
    target = build_model(cfg).state_dict()
    new = [k for k in target if ".nonlocals." in k or k.startswith("head.")]
    kernels = [k for k, v in target.items() if v.dim() == 5 and k not in new]
    copied = [k for k in target if k not in new and k not in kernels]
    report = cu.inflate(src, cfg, method="center")
    assert (report.copied, report.inflated, report.initialised) == (copied, kernels, new)
    assert report.unused == ["head.proj.weight", "head.proj.bias"]
    assert f"{len(copied)} copied, {len(kernels)} inflated (center), {len(new)} newly initialised, " \
           f"2 unused source tensors" in printed
    assert "stem.conv.weight  7x7 -> 5x7x7" in printed and "res3.nonlocals.1.theta.{weight, bias}" in printed
    assert "unused source tensors (2):\n  head.proj.{weight, bias}" in printed
    assert "notice: the source's classifier has 5 classes and the model 7" in printed
    # The file is a start for training: TRAIN.CHECKPOINT_FILE_PATH takes it whatever CHECKPOINT_INFLATE says.
    for inflate_flag in (True, False):
        cfg.TRAIN.CHECKPOINT_FILE_PATH, cfg.TRAIN.CHECKPOINT_INFLATE = out, inflate_flag
        started = build_model(cfg)
        again = cu.load_pretrained_for_training(cfg, started)
        assert len(again.copied) == len(target) and not again.inflated


# --------------------------------------------------------------------------- mismatches
def test_alpha_and_architecture_mismatches_name_the_layer_and_both_shapes_and_write_nothing(small_cfg, tmp_path):
    _, half = random_2d(small_cfg, tmp_path, 0.5, name="a05.pyth")
    _, plain = random_2d(small_cfg, tmp_path, 0.0, name="a0.pyth")
    _, quarter = random_2d(small_cfg, tmp_path, 0.25, name="a025.pyth")
    _, deep = random_2d(small_cfg, tmp_path, 0.25, name="r50.pyth", depth=50)
    out = tmp_path / "out.pyth"
    out.write_bytes(b"an older file")
    # Width 8: res2's conv1 has 8 output channels; alpha 0.5 splits them 4 + 4, alpha 0.25 6 + 2.
    cases = [
        (half, 0.25, ["res2.blocks.0.conv1.h2h.weight: source (4, 8, 1, 1), model (6, 8, 3, 1, 1)",
                      "(alpha 0.5), the model into 6 + 2 (OCT.ALPHA 0.25, OCT.CHANNEL_MULTIPLE 1)"]),
        (plain, 0.25, ["res2.blocks.0.conv1.h2l.weight: absent from the source, model (2, 8, 3, 1, 1)",
                       "res2.blocks.0.conv1.h2h.weight: source (8, 8, 1, 1), model (6, 8, 3, 1, 1)"]),
        (quarter, 0.0, ["res2.blocks.0.conv1.h2l.weight: source (2, 8, 1, 1), absent from the model"]),
        (deep, 0.25, ["res2.blocks.2.conv1.h2h.weight: source (6, 24, 1, 1), absent from the model",
                      "the source has (3, 4, 6, 3) blocks per stage, the model (2, 2, 2, 2) (MODEL.DEPTH 26)"]),
    ]
    for src, alpha, expected in cases:
        cfg = cfg_for(small_cfg, "i3d", alpha)
        with pytest.raises(CheckpointError) as e:
            cu.inflate(src, cfg, out=str(out), method="mean")
        msg = str(e.value)
        assert msg.startswith(f"{src} (octvideo) does not fit the model"), msg
        for text in expected:
            assert text in msg, (text, msg)
        assert out.read_bytes() == b"an older file"


def test_inflation_needs_a_2d_source_and_a_3d_model(small_cfg, tmp_path):
    _, src2d = random_2d(small_cfg, tmp_path, 0.25)
    src3d = cu.save_checkpoint(str(tmp_path / "i3d.pyth"), build_model(cfg_for(small_cfg, "i3d", 0.25)))
    with pytest.raises(CheckpointError, match=r"i3d.pyth is a 3D \(octvideo\) checkpoint; inflation takes a 2D"):
        cu.inflate(src3d, cfg_for(small_cfg, "i3d", 0.25))
    with pytest.raises(CheckpointError, match="MODEL.ARCH 'resnet' builds a 2D model"):
        cu.inflate(src2d, cfg_for(small_cfg, "resnet", 0.25))
    with pytest.raises(ValueError, match=r"one of \('mean', 'center'\); got 'middle'"):
        cu.inflate(src2d, cfg_for(small_cfg, "i3d", 0.25), method="middle")


# --------------------------------------------------------------------------- torchvision
@pytest.fixture(scope="module")
def torchvision_r26(tmp_path_factory):
    """torchvision's own ResNet class with ResNet-26 depths (2, 2, 2, 2) at full width, as torchvision
    saves it: a bare state dict."""
    torch.manual_seed(0)
    net = randomize(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [2, 2, 2, 2]))
    path = str(tmp_path_factory.mktemp("tv") / "resnet26.pth")
    torch.save(net.state_dict(), path)
    return net, path


def test_torchvision_resnet_loads_exactly_into_the_2d_model(small_cfg, torchvision_r26):
    net, path = torchvision_r26
    model = build_model(cfg_for(small_cfg, "resnet", 0.0, width=64, num_classes=1000)).eval()
    assert cu.load_checkpoint(path, model)["format"] == "torchvision"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert close(model(x), net(x))


def test_torchvision_resnet_inflates_into_i3d_with_its_logits_on_a_static_clip(small_cfg, torchvision_r26, caplog):
    net, path = torchvision_r26
    cfg = cfg_for(small_cfg, "i3d", 0.0, width=64, num_classes=1000)
    model = build_model(cfg).eval()
    report = cu.inflate(path, cfg, method="center", model=model)
    assert report.source_format == "torchvision"
    assert "head.proj.weight" in report.copied and not report.unused and not report.initialised  # 1000 classes
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert close(model(static_clip(frame, 4)), net(frame))
    # Another class count: the classifier is new, the source's fc unused, and a notice says so.
    cfg7 = cfg_for(small_cfg, "i3d", 0.0, width=64, num_classes=7)
    torch.manual_seed(3)
    fresh = build_model(cfg7)
    torch.manual_seed(3)
    model7 = build_model(cfg7)
    with caplog.at_level("WARNING"):
        report = cu.inflate(path, cfg7, method="center", model=model7)
    assert report.initialised == ["head.proj.weight", "head.proj.bias"] and report.unused == ["fc.weight", "fc.bias"]
    assert torch.equal(model7.head.proj.weight, fresh.head.proj.weight)
    assert "classifier has 1000 classes and the model 7" in caplog.text


# --------------------------------------------------------------------------- octconv.pytorch
def octconv_pytorch_keys(depths=(2, 2, 2, 2)):
    """Every key of d-li14/octconv.pytorch's OctResNet (oct_resnet.py / octconv.py), from its code:
    Conv_BN(_ACT) modules ``conv`` (OctaveConv: conv_h2h/h2l/l2h/l2l, a path absent when its alpha
    is 0) and ``bn_h`` / ``bn_l`` (bn_l absent when alpha_out is 0); layer1 block 0 takes alpha_in 0,
    layer4 block 0 goes 0.5 -> 0 and the rest of layer4 is plain (``output=True``)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"] + [f"bn1.{p}" for p in bn] + ["fc.weight", "fc.bias"]

    def conv_bn(prefix, a_in, a_out):
        paths = ["h2h"] + (["h2l"] if a_out else []) + (["l2h"] if a_in else []) + (["l2l"] if a_in and a_out else [])
        keys.extend(f"{prefix}.conv.conv_{p}.weight" for p in paths)
        keys.extend(f"{prefix}.bn_{f}.{p}" for f in (["h", "l"] if a_out else ["h"]) for p in bn)

    for layer, n in enumerate(depths, start=1):
        for b in range(n):
            a_in = 0.0 if (layer == 1 and b == 0) or (layer == 4 and b > 0) else 0.5
            a_out = 0.0 if layer == 4 else 0.5
            conv_bn(f"layer{layer}.{b}.conv1", a_in, a_out)
            for i in (2, 3):
                conv_bn(f"layer{layer}.{b}.conv{i}", 0.0 if layer == 4 else 0.5, 0.0 if layer == 4 else 0.5)
            if b == 0:
                conv_bn(f"layer{layer}.{b}.downsample.0", a_in, a_out)
    return keys


def _octconv_pytorch_name(key: str) -> str:
    """octvideo key -> octconv.pytorch key (its module names), to give random weights that layout."""
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


def test_octconv_pytorch_checkpoint_loads_and_inflates_at_alpha_05_only(small_cfg, tmp_path, capsys):
    # Width 16: the alpha 0.1 model below needs int(0.1 * 16) = 1 low channel in res2.
    model2d = randomize(build_model(cfg_for(small_cfg, "resnet", 0.5, width=16)))
    theirs = {"module." + _octconv_pytorch_name(k): v for k, v in model2d.state_dict().items()}
    assert sorted(theirs) == sorted("module." + k for k in octconv_pytorch_keys())  # their exact key set
    path = str(tmp_path / "oct_resnet26.pth.tar")
    torch.save({"epoch": 100, "arch": "oct_resnet26", "state_dict": theirs}, path)  # PyTorch ImageNet example

    exact = build_model(cfg_for(small_cfg, "resnet", 0.5, width=16))
    assert cu.load_checkpoint(path, exact)["format"] == "octconv-pytorch"
    assert all(torch.equal(exact.state_dict()[k], v) for k, v in model2d.state_dict().items())

    cfg = cfg_for(small_cfg, "i3d", 0.5, width=16)
    model3d = build_model(cfg).eval()
    report = cu.inflate(path, cfg, method="center", model=model3d)
    assert report.source_format == "octconv-pytorch" and not report.unused and not report.initialised
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert close(model3d(static_clip(frame, 4)), model2d(frame))

    # The paper's video models use alpha 0.1: this source does not fit them, and says why.
    out = str(tmp_path / "oct_i3d_a01.pyth")
    rc = tool("inflate").main(["--src", path, "--cfg", os.path.join(ROOT, "configs/oct_i3d.yaml"),
                               "MODEL.WIDTH", "16", "MODEL.DEPTH", "26", "--out", out])
    err = capsys.readouterr().err
    assert rc == 1 and not os.path.exists(out)
    # res2's conv1 has 16 output channels: 8 + 8 at alpha 0.5, 15 + 1 at alpha 0.1 (kt 3 in I3D).
    assert "res2.blocks.0.conv1.h2h.weight (layer1.0.conv1.conv.conv_h2h.weight in the source): " \
           "source (8, 16, 1, 1), model (15, 16, 3, 1, 1)" in err, err
    assert "into 8 high + 8 low (alpha 0.5), the model into 15 + 1 (OCT.ALPHA 0.1, OCT.CHANNEL_MULTIPLE 1)" in err
    assert f"nothing written to {out}" in err


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
    assert info["format"] == "pytorchvideo" and info["epoch"] == 0  # a published model, not a run to resume
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert close(model(x), reference(x), 1e-5)


def test_full_size_pytorchvideo_i3d_converts_with_the_tool_and_verifies(tmp_path, capsys):
    # The published I3D R50 layout (64 wide, 400 classes); a 96 px clip keeps the check cheap.
    torch.manual_seed(0)
    reference = randomize(hub.i3d_r50(head_pool_kernel_size=(4, 3, 3)))
    src, dst = str(tmp_path / "I3D_8x8_R50.pyth"), str(tmp_path / "i3d_octvideo.pyth")
    torch.save({"model_state": reference.state_dict()}, src)
    names = tmp_path / "classes.json"
    names.write_text(json.dumps([f"class {i}" for i in range(400)]))
    rc = tool("convert_checkpoint").main([
        "--src", src, "--format", "pytorchvideo", "--cfg", os.path.join(ROOT, "configs/kinetics400/i3d.yaml"),
        "DATA.TRAIN_CROP_SIZE", "96", "CLASSNAMES_FILE", str(names), "--out", dst, "--verify"])
    out = capsys.readouterr().out
    assert rc == 0 and "-> OK" in out, out
    cfg = load_config(os.path.join(ROOT, "configs/kinetics400/i3d.yaml"))
    model = build_model(cfg)
    info = cu.load_checkpoint(dst, model)  # an octvideo file now, loadable exactly
    assert info["format"] == "octvideo" and info["class_names"][399] == "class 399" and info["epoch"] == 0
    x = torch.randn(1, 3, 8, 96, 96)
    with torch.no_grad():
        assert close(model.eval()(x), reference(x), 1e-5)


# --------------------------------------------------------------------------- PySlowFast
_I3D_TEMPORAL = ([3], [3, 1], [3, 1], [1, 3])  # PySlowFast _TEMPORAL_KERNEL_BASIS["i3d"], res2..res5
_NLN_AFTER = ([], [1, 3], [1, 3, 5], [])  # configs/Kinetics/c2/I3D_NLN_8x8_R50.yaml NONLOCAL.LOCATION


def pyslowfast_state_dict(arch, depths=(3, 4, 6, 3), width=8, num_classes=7, nl_norm="bn", seed=0):
    """PySlowFast's ResNet (video_model_builder.py) keys and shapes, random values: stem ``s1``,
    stages ``s2..s5`` of ResBlocks (``branch1`` projection + ``branch1_bn`` on block 0,
    ``branch2.{a,b,c}`` + ``{a,b,c}_bn``: Tx1x1, 1x3x3, 1x1x1), Non-local blocks (1x1x1 convs with
    bias, inner C/2, then a BN) and ``head.projection``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, *shape, bias=False):
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.1
        if bias:
            sd[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.1

    def bn(name, c):
        sd.update({f"{name}.weight": 0.5 + torch.rand(c, generator=g), f"{name}.bias": 0.1 * torch.randn(c, generator=g),
                   f"{name}.running_mean": 0.1 * torch.randn(c, generator=g),
                   f"{name}.running_var": 0.5 + torch.rand(c, generator=g),
                   f"{name}.num_batches_tracked": torch.tensor(1000)})

    conv("s1.pathway0_stem.conv", width, 3, 1 if arch == "c2d" else 5, 7, 7)
    bn("s1.pathway0_stem.bn", width)
    dim_in = width
    for s, n in enumerate(depths):
        inner, out = width * 2 ** s, 4 * width * 2 ** s
        kernels = (_I3D_TEMPORAL[s] * n)[:n] if arch.startswith("i3d") else [1] * n
        for b in range(n):
            block = f"s{s + 2}.pathway0_res{b}"
            if b == 0:
                conv(f"{block}.branch1", out, dim_in, 1, 1, 1)
                bn(f"{block}.branch1_bn", out)
            conv(f"{block}.branch2.a", inner, dim_in if b == 0 else out, kernels[b], 1, 1)
            bn(f"{block}.branch2.a_bn", inner)
            conv(f"{block}.branch2.b", inner, inner, 1, 3, 3)
            bn(f"{block}.branch2.b_bn", inner)
            conv(f"{block}.branch2.c", out, inner, 1, 1, 1)
            bn(f"{block}.branch2.c_bn", out)
            if arch.endswith("_nl") and b in _NLN_AFTER[s]:
                nl = f"s{s + 2}.pathway0_nonlocal{b}"
                for part in ("theta", "phi", "g"):
                    conv(f"{nl}.conv_{part}", out // 2, out, 1, 1, 1, bias=True)
                conv(f"{nl}.conv_out", out, out // 2, 1, 1, 1, bias=True)
                bn(f"{nl}.{nl_norm}", out)
        dim_in = out
    conv("head.projection", num_classes, dim_in, bias=True)
    return sd


@pytest.mark.parametrize("arch", ["c2d", "i3d", "i3d_nl"])
def test_pyslowfast_checkpoint_converts_with_every_tensor_in_place(small_cfg, tmp_path, capsys, arch):
    theirs = pyslowfast_state_dict(arch)
    src, dst = str(tmp_path / f"{arch.upper()}_8x8_R50.pyth"), str(tmp_path / "converted.pyth")
    torch.save({"epoch": 196, "model_state": theirs, "cfg": "TRAIN: ..."}, src)
    cfg_file = os.path.join(ROOT, f"configs/kinetics400/{arch}.yaml")
    rc = tool("convert_checkpoint").main(["--src", src, "--format", "pyslowfast", "--cfg", cfg_file,
                                          "MODEL.WIDTH", "8", "MODEL.NUM_CLASSES", "7", "--out", dst])
    assert rc == 0, capsys.readouterr().err
    model = build_model(load_config(cfg_file, ["MODEL.WIDTH", "8", "MODEL.NUM_CLASSES", "7"]))
    info = cu.load_checkpoint(dst, model)  # exact: every key of the model, every shape
    assert info["epoch"] == 0 and info["extra"]["source_format"] == "pyslowfast"
    ours = model.state_dict()
    assert len(ours) == len(theirs)  # every PySlowFast tensor used, none invented
    spots = {
        "s1.pathway0_stem.conv.weight": "stem.conv.weight",
        "s1.pathway0_stem.bn.running_var": "stem.bn.running_var",
        "s2.pathway0_res0.branch1.weight": "res2.blocks.0.shortcut.conv.h2h.weight",
        "s2.pathway0_res0.branch1_bn.running_mean": "res2.blocks.0.shortcut.bn.running_mean",
        "s3.pathway0_res1.branch2.a.weight": "res3.blocks.1.conv1.h2h.weight",
        "s3.pathway0_res1.branch2.a_bn.weight": "res3.blocks.1.bn1.weight",
        "s4.pathway0_res5.branch2.b.weight": "res4.blocks.5.conv2.h2h.weight",
        "s5.pathway0_res2.branch2.c.weight": "res5.blocks.2.conv3.h2h.weight",
        "s5.pathway0_res2.branch2.c_bn.bias": "res5.blocks.2.bn3.bias",
        "head.projection.weight": "head.proj.weight",
        "head.projection.bias": "head.proj.bias",
    }
    if arch == "i3d_nl":
        spots.update({
            "s3.pathway0_nonlocal1.conv_theta.weight": "res3.nonlocals.1.theta.weight",
            "s3.pathway0_nonlocal3.conv_g.bias": "res3.nonlocals.3.g.bias",
            "s4.pathway0_nonlocal5.conv_phi.weight": "res4.nonlocals.5.phi.weight",
            "s4.pathway0_nonlocal1.conv_out.weight": "res4.nonlocals.1.out.weight",
            "s4.pathway0_nonlocal3.bn.running_var": "res4.nonlocals.3.bn.running_var",
        })
    for their_key, our_key in spots.items():
        assert torch.equal(ours[our_key], theirs[their_key]), (their_key, our_key)


def test_pyslowfast_newer_nonlocal_norm_name_and_direct_loading(small_cfg, tmp_path):
    """Newer PySlowFast names the Non-local BN ``norm``; load_checkpoint reads PySlowFast files directly."""
    theirs = pyslowfast_state_dict("i3d_nl", depths=(2, 2, 2, 2), nl_norm="norm")
    src = str(tmp_path / "nln.pyth")
    torch.save({"model_state": theirs}, src)
    model = build_model(cfg_for(small_cfg, "i3d_nl", 0.0))
    assert cu.load_checkpoint(src, model)["format"] == "pyslowfast"
    assert torch.equal(model.res4.nonlocals["1"].bn.weight, theirs["s4.pathway0_nonlocal1.norm.weight"])


def test_a_named_format_the_file_does_not_follow_is_an_error(torchvision_r26, tmp_path, capsys):
    _, path = torchvision_r26
    out = str(tmp_path / "x.pyth")
    rc = tool("convert_checkpoint").main(["--src", path, "--format", "pyslowfast", "--cfg",
                                          os.path.join(ROOT, "configs/kinetics400/i3d.yaml"), "--out", out])
    err = capsys.readouterr().err
    assert rc == 1 and not os.path.exists(out)
    assert f"{path} is not a pyslowfast checkpoint: it has no key like 's1.pathway0_stem.conv.weight' " \
           "(its keys follow the torchvision layout)" in err
    rc = tool("convert_checkpoint").main(["--src", path, "--cfg", os.path.join(ROOT, "configs/kinetics400/i3d.yaml"),
                                          "--out", out])
    assert rc == 1 and "is a 2D (torchvision) image checkpoint" in capsys.readouterr().err and not os.path.exists(out)


# --------------------------------------------------------------------------- TRAIN.CHECKPOINT_FILE_PATH
def test_finetuning_takes_the_backbone_and_reinitialises_a_different_classifier(small_cfg, tmp_path):
    torch.manual_seed(0)
    reference = randomize(hub.i3d_r50(stem_dim_out=8, model_num_class=7, head_pool_kernel_size=(4, 2, 2)))
    path = str(tmp_path / "i3d_k400.pyth")
    torch.save({"model_state": reference.state_dict(), "epoch": 196}, path)
    exact = build_model(cfg_for(small_cfg, "i3d", 0.0, depth=50))
    cu.load_checkpoint(path, exact)
    cfg = cfg_for(small_cfg, "i3d", 0.0, depth=50, num_classes=5)
    cfg.TRAIN.CHECKPOINT_FILE_PATH = path
    model = build_model(cfg)
    report = cu.load_pretrained_for_training(cfg, model)
    assert report.initialised == ["head.proj.weight", "head.proj.bias"] and len(report.unused) == 2
    assert report.method is None and not report.inflated
    got, want = model.state_dict(), exact.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("head."))


def test_wrong_initialisation_settings_are_explained(small_cfg, tmp_path):
    _, path2d = random_2d(small_cfg, tmp_path, 0.25)
    path3d = cu.save_checkpoint(str(tmp_path / "i3d.pyth"), build_model(cfg_for(small_cfg, "i3d", 0.25)))
    video = build_model(cfg_for(small_cfg, "i3d", 0.25))
    with pytest.raises(CheckpointError, match="r2d.pyth is a 2D .* set TRAIN.CHECKPOINT_INFLATE True .* tools/inflate.py"):
        cu.initialise_from(path2d, video, inflate=False)
    with pytest.raises(CheckpointError, match="i3d.pyth is a 3D .* the model is 2D"):
        cu.initialise_from(path3d, build_model(cfg_for(small_cfg, "resnet", 0.25)))
    deeper = build_model(cfg_for(small_cfg, "i3d", 0.25, depth=50))
    with pytest.raises(CheckpointError, match=r"(?s)absent from the source.*MODEL.DEPTH 50"):
        cu.initialise_from(path3d, deeper)
    report = cu.initialise_from(path2d, video, inflate=True, inflate_method="mean")
    assert report.method == "mean" and "stem.conv.weight" in report.inflated
