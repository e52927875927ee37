"""OCT.CHANNEL_MULTIPLE: the octave split rounded to whole multiples of M channels (opt-in)."""
import pytest
import torch

import octvideo.checkpoint as cu
from octvideo.checkpoint import CheckpointError
from octvideo.config import ConfigError, load_config
from octvideo.layers import OctBatchNorm, OctConv3d, split_channels
from octvideo.models import build_model
from octvideo.models.nonlocal_block import OctNonLocal3d


def test_split_rounds_the_low_branch_to_the_nearest_multiple():
    # ResNet-50 widths at alpha 0.1: the official split gives 6, 12, 25, 51, 102 low channels.
    widths = (64, 128, 256, 512, 1024)
    assert [split_channels(c, 0.1)[1] for c in widths] == [6, 12, 25, 51, 102]
    # Nearest multiple of 8 of 6.4, 12.8, 25.6, 51.2, 102.4.
    assert [split_channels(c, 0.1, multiple=8)[1] for c in widths] == [8, 16, 24, 48, 104]
    # Of 16: 6.4 rounds to 0 and is raised to one multiple; 25.6 -> 32, 51.2 -> 48, 102.4 -> 96.
    assert [split_channels(c, 0.1, multiple=16)[1] for c in widths] == [16, 16, 32, 48, 96]
    for c in widths:
        for m in (1, 8, 16):
            high, low = split_channels(c, 0.1, multiple=m)
            assert high + low == c and high % m == 0 and low % m == 0
    # Halves round up; splits already on a multiple stay; alpha 0 stays plain.
    assert split_channels(64, 0.125, multiple=16) == (48, 16)  # 8 / 16 = 0.5 -> one multiple
    assert split_channels(256, 0.5, multiple=8) == (128, 128)
    assert split_channels(256, 0.0, multiple=8) == (256, 0)


def test_split_errors_name_the_values():
    with pytest.raises(ValueError, match="channel multiple must be a positive int; got 0"):
        split_channels(64, 0.1, multiple=0)
    # One multiple of 8 takes all 8 channels: no high branch is left.
    with pytest.raises(ValueError, match=r"in_channels=8 and channel multiple 8 leaves the high-frequency branch empty"):
        OctConv3d(8, 16, 1, alpha_in=0.25, alpha_out=0.25, channel_multiple=8)
    with pytest.raises(ConfigError, match="OCT.CHANNEL_MULTIPLE must be a positive int; got 0"):
        load_config(None, ["OCT.CHANNEL_MULTIPLE", "0"])


def _aligned_cfg(small_cfg, arch="i3d_nl", alpha=0.1, multiple=8, width=16):
    cfg = small_cfg(arch, alpha, width=width)
    cfg.OCT.CHANNEL_MULTIPLE = multiple
    cfg.MODEL.DROPOUT_RATE = 0.0
    return cfg


def test_every_octave_layer_of_the_model_takes_the_aligned_split(small_cfg):
    model = build_model(_aligned_cfg(small_cfg))
    lows = []
    for module in model.modules():
        if isinstance(module, OctConv3d):
            lows += [module.in_low, module.out_low]
        elif isinstance(module, OctBatchNorm):
            lows.append(module.l.num_features)
        elif isinstance(module, OctNonLocal3d):
            lows.append(module.low_channels)
    octave = [n for n in lows if n]
    # Width 16 at alpha 0.1 (widths 16, 32, 64, 128, 256): the official split gives 1, 3, 6, 12, 25
    # low channels; to the nearest multiple of 8, at least one: 8, 8, 8, 16, 24.
    assert octave and all(n % 8 == 0 for n in octave)
    assert sorted(set(octave)) == [8, 16, 24]
    assert any(isinstance(m, OctNonLocal3d) for m in model.modules())


def test_checkpoints_of_one_split_do_not_load_into_the_other(small_cfg, tmp_path):
    aligned = build_model(_aligned_cfg(small_cfg, "i3d", 0.25, 8))
    path = cu.save_checkpoint(str(tmp_path / "aligned.pyth"), aligned)
    official = build_model(_aligned_cfg(small_cfg, "i3d", 0.25, 1))
    with pytest.raises(CheckpointError) as e:
        cu.load_checkpoint(path, official)
    msg = str(e.value)
    assert "OCT.CHANNEL_MULTIPLE 8 in the checkpoint, 1 in the model" in msg
    # Width 16 at alpha 0.25: res2's conv1 splits its 16 outputs 8 + 8 aligned, 12 + 4 officially.
    assert "res2.blocks.0.conv1.h2h.weight: checkpoint (8, 16, 3, 1, 1), model (12, 16, 3, 1, 1)" in msg
    # Same file, same config: loads exactly, and the two models compute the same logits.
    again = build_model(_aligned_cfg(small_cfg, "i3d", 0.25, 8))
    cu.load_checkpoint(path, again)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), aligned.eval()(x))


def test_inflating_an_official_2d_split_into_an_aligned_model_names_the_key(small_cfg, tmp_path):
    src = cu.save_checkpoint(str(tmp_path / "r2d.pyth"), build_model(_aligned_cfg(small_cfg, "resnet", 0.25, 1)))
    out = tmp_path / "out.pyth"
    with pytest.raises(CheckpointError) as e:
        cu.inflate(src, _aligned_cfg(small_cfg, "i3d", 0.25, 8), out=str(out), method="mean")
    msg = str(e.value)
    assert "16 channels into 12 high + 4 low (alpha 0.25), the model into 8 + 8" in msg
    assert "OCT.CHANNEL_MULTIPLE 8): set OCT.ALPHA and OCT.CHANNEL_MULTIPLE to the source's split" in msg
    assert not out.exists()


def test_benchmark_channel_multiple_builds_aligned_models_and_evaluates_no_target():
    from octvideo.utils import benchmark as bm

    video = dict(parts=("memory",), groups=("I3D",), models=("I3D", "Oct-I3D a=0.1"), size=32, frames=4, flops=False)
    official, aligned = bm.run(bm.Settings(**video)), bm.run(bm.Settings(channel_multiple=16, **video))
    saved = {r.name: (r.saved_bytes, a.saved_bytes) for r, a in zip(official["models"], aligned["models"])}
    assert saved["I3D"][0] == saved["I3D"][1]  # vanilla: no octave to align
    # At multiple 16 more channels go to the half-resolution branch (16 of 64 in res2, not 6).
    assert saved["Oct-I3D a=0.1"][1] < saved["Oct-I3D a=0.1"][0]
    assert aligned["targets"] == []
    assert "OCT.CHANNEL_MULTIPLE 16 (not the published split" in bm.report(aligned, markdown=True)
    with pytest.raises(ValueError, match="--channel-multiple must be a positive integer; got 0"):
        bm.run(bm.Settings(channel_multiple=0, **video))
