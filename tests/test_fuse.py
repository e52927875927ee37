"""fuse_conv_bn: an inference copy with every BatchNorm folded into its convolution computes the
same scores, leaves the original model untouched, and refuses what it cannot fold."""
import pytest
import torch
import torch.nn as nn

from octvideo.layers import OctConv3d, reference_mode
from octvideo.layers.octave import OctBatchNorm
from octvideo.models import build_model, fuse_conv_bn


def _randomise_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters (a fresh BN folds to the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


@pytest.mark.parametrize(
    "arch,alpha",
    [("i3d", 0.0), ("i3d", 0.25), ("i3d_nl", 0.25), ("c2d", 0.1), ("resnet", 0.5), ("i3d", 0.5)],
)
def test_folded_model_gives_the_scores_of_the_original(small_cfg, arch, alpha):
    cfg = small_cfg(arch, alpha, width=16)
    model = _randomise_bn(build_model(cfg)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_conv_bn(model)
    num_bn = sum(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, OctBatchNorm)) for m in model.modules())
    num_octave_bn = sum(isinstance(m, OctBatchNorm) for m in model.modules())
    # Every BatchNorm of the network follows a convolution and is folded; none is left.
    assert fused.fused_conv_bn == num_bn - 2 * num_octave_bn  # an OctBatchNorm holds two BatchNorms
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, OctBatchNorm)) for m in fused.modules())
    shape = (2, 3, 32, 32) if arch == "resnet" else (2, 3, 4, 32, 32)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        got = fused(x)
        with reference_mode():  # the four-path reference form folds the same way
            got_reference = fused(x)
    scale = expected.abs().max()
    assert scale > 1e-3  # the check below is not vacuous
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(scale))
    torch.testing.assert_close(got_reference, expected, rtol=0, atol=1e-5 * float(scale))
    # The original is untouched (weights, BN statistics, no biases added).
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_folding_an_octave_convolution_scales_both_paths_into_each_output():
    """h2h and l2h write the high output, h2l and l2l the low one: each BN scales both, shifts once."""
    conv = OctConv3d(16, 24, (1, 3, 3), padding=(0, 1, 1), alpha_in=0.25, alpha_out=0.5)
    block = nn.Module()
    block.conv1, block.bn1 = conv, OctBatchNorm(24, 0.5)
    _randomise_bn(block, seed=3)
    block.eval()
    high = torch.randn(1, 12, 2, 8, 8)
    low = torch.randn(1, 4, 2, 4, 4)
    with torch.no_grad():
        expected = block.bn1(block.conv1((high, low)))
        fused = fuse_conv_bn(block)
        got = fused.bn1(fused.conv1((high, low)))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    c = fused.conv1
    assert isinstance(fused.bn1, nn.Identity)
    # The shift is added once per output: l2h and h2l get zero biases.
    assert c.l2h.bias.abs().max() == 0 and c.h2l.bias.abs().max() == 0
    assert c.h2h.bias.abs().max() > 0 and c.l2l.bias.abs().max() > 0


def test_a_batchnorm_without_running_statistics_is_refused():
    block = nn.Module()
    block.conv = nn.Conv3d(3, 4, 1, bias=False)
    block.bn = nn.BatchNorm3d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="no running statistics"):
        fuse_conv_bn(block)


def test_the_test_config_runs_a_folded_copy(small_cfg):
    """TEST.FUSE_CONV_BN (default on) folds for the multi-view test; the trained model keeps its BNs."""
    from octvideo.engine.evaluator import inference_model

    cfg = small_cfg("i3d", 0.25)
    model = build_model(cfg)
    assert cfg.TEST.FUSE_CONV_BN is True
    folded = inference_model(model, cfg)
    assert folded is not model and not any(isinstance(m, OctBatchNorm) for m in folded.modules())
    assert any(isinstance(m, OctBatchNorm) for m in model.modules()) and model.training
    cfg.TEST.FUSE_CONV_BN = False
    assert inference_model(model, cfg) is model


def test_the_test_runs_channels_last_by_default_with_the_scores_of_contiguous_tensors(small_cfg):
    """MODEL.CHANNELS_LAST (default on): the multi-view test's model and its normalised views are
    channels-last, so every convolution reads channels-last input (the oneDNN fast paths); the
    scores are those of the contiguous run."""
    import copy

    from octvideo.config import get_cfg
    from octvideo.engine.evaluator import inference_model, video_scores
    from octvideo.layers import OctConv3d

    assert get_cfg().MODEL.CHANNELS_LAST is True
    cfg = small_cfg("i3d", 0.5, width=16)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    frames = torch.randint(0, 256, (2, 3, 4, 3, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")

    def scores(channels_last):
        cfg.MODEL.CHANNELS_LAST = channels_last
        runner = inference_model(copy.deepcopy(model), cfg)
        layouts = []

        def record(module, inputs):
            x = inputs[0][0] if isinstance(inputs[0], tuple) else inputs[0]
            layouts.append(x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous())

        convs = [m for m in runner.modules() if isinstance(m, (OctConv3d, nn.Conv3d))]
        for m in convs:
            m.register_forward_pre_hook(record)
        with torch.no_grad():
            out = video_scores(runner, frames, 4, cfg, cpu)
        weights_cl = all(m.weight.is_contiguous(memory_format=torch.channels_last_3d)
                         for m in runner.modules() if isinstance(m, nn.Conv3d))
        return out, layouts, weights_cl

    got, layouts, weights_cl = scores(True)
    assert layouts and all(layouts) and weights_cl
    expected, layouts, _ = scores(False)
    assert layouts and not any(layouts)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_model_compile_runs_the_test_on_a_compiled_frozen_model(small_cfg):
    """MODEL.COMPILE at test time: the (folded) model compiled with inductor, weights frozen on the
    CPU: the same scores as the eager folded model, the trained model's weights untouched."""
    from octvideo.engine.evaluator import inference_model
    from octvideo.models.build import CompiledForInference

    cfg = small_cfg("i3d", 0.5, width=16)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial running statistics for the folding
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 4, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    eager = inference_model(model, cfg)
    cfg.MODEL.COMPILE = True
    compiled = inference_model(model, cfg)
    assert isinstance(compiled, CompiledForInference)
    with torch.no_grad():
        expected = eager(x)
    got = compiled(x)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # The compiled call runs under inductor's freezing (on the CPU), and only inside the call.
    import torch._inductor.config as inductor_config

    seen = []
    compiled.__dict__["_compiled"] = lambda t: (seen.append((inductor_config.freezing, torch.is_grad_enabled())), t)[1]
    compiled(x)
    assert seen == [(True, False)] and not inductor_config.freezing


def test_compile_mode_reaches_torch_compile_and_bad_modes_are_refused(small_cfg, monkeypatch):
    """MODEL.COMPILE_MODE is the mode the multi-view test compiles with; an unknown mode is refused
    when the wrapper is built, naming it (the config check does the same for the key)."""
    from octvideo.engine.evaluator import inference_model
    from octvideo.models import compile_for_inference

    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (seen.append(kw), model)[1])
    cfg = small_cfg("i3d", 0.5, width=8)
    cfg.MODEL.COMPILE, cfg.MODEL.COMPILE_MODE = True, "reduce-overhead"
    model = build_model(cfg).eval()
    wrapped = inference_model(model, cfg)
    assert seen == [{"mode": "reduce-overhead"}] and wrapped.mode == "reduce-overhead"
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(wrapped(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(ValueError, match="'turbo'"):
        compile_for_inference(model, "turbo")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
def test_reduce_overhead_inference_on_cuda_keeps_every_chunks_scores(small_cfg):
    """Under a CUDA-graph mode each call replays a graph whose output the next replay overwrites:
    the wrapper returns copies, so the scores of earlier chunks stay what they were."""
    from octvideo.models import compile_for_inference

    cfg = small_cfg("i3d", 0.5, width=8)
    model = build_model(cfg).cuda().eval()
    compiled = compile_for_inference(model, "reduce-overhead")
    xs = [torch.randn(2, 3, 4, 32, 32, device="cuda") for _ in range(4)]
    outs = [compiled(x) for x in xs]  # the first calls warm up, later ones replay the graph
    with torch.no_grad():
        for x, out in zip(xs, outs):
            torch.testing.assert_close(out, model(x), rtol=1e-3, atol=1e-3)
    assert len({o.data_ptr() for o in outs}) == len(outs)
