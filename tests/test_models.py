"""Models built from the architecture tables: layout, shapes, gradients, errors."""
import pytest
import torch
import torch.nn as nn

from octvideo.config import get_cfg
from octvideo.layers import OctConv3d
from octvideo.models import ARCHS, build_model
from octvideo.models.nonlocal_block import NonLocal3d, OctNonLocal3d

VIDEO_ARCHS = ["c2d", "i3d", "c2d_nl", "i3d_nl"]


def full_cfg(arch, alpha, num_classes=400):
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.OCT.ALPHA, cfg.MODEL.NUM_CLASSES = arch, alpha, num_classes
    return cfg


def test_resnet50_parameter_count_matches_torchvision():
    import torchvision

    ours = build_model(full_cfg("resnet", 0.0, 1000))
    theirs = torchvision.models.resnet50()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # Octave convolution redistributes weights between paths but keeps their number (Table 1 note).
    oct_model = build_model(full_cfg("resnet", 0.5, 1000))
    n_oct = sum(p.numel() for p in oct_model.parameters() if p.dim() > 1)
    n_van = sum(p.numel() for p in ours.parameters() if p.dim() > 1)
    assert n_oct == n_van


def test_i3d_table_layout():
    model = build_model(full_cfg("i3d_nl", 0.1))
    assert model.stem.conv.kernel_size == (5, 7, 7) and model.stem.conv.stride == (1, 2, 2)
    assert model.stem.pool.kernel_size == (1, 3, 3)
    kernels = [[b.conv1.kernel_size[0] for b in getattr(model, s).blocks] for s in model.stage_names]
    assert kernels == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    nonlocal_positions = [sorted(int(k) for k in getattr(model, s).nonlocals) for s in model.stage_names]
    assert nonlocal_positions == [[], [1, 3], [1, 3, 5], []]
    assert model.pool1.pool.kernel_size == (2, 1, 1)
    # Oct-ResNet layout: res2 block 0 enters from a plain stem; res5 is plain, entered from alpha.
    assert model.res2.blocks[0].conv1.alpha_in == 0 and model.res2.blocks[0].conv1.alpha_out == 0.1
    assert model.res2.blocks[0].shortcut.conv.alpha_in == 0
    assert model.res5.blocks[0].conv1.alpha_in == 0.1 and model.res5.blocks[0].conv1.alpha_out == 0
    assert model.res5.blocks[0].shortcut.conv.alpha_in == 0.1
    assert all(c.alpha_in == 0 and c.alpha_out == 0 for c in (model.res5.blocks[1].conv1, model.res5.blocks[0].conv2))
    # stride on the 3x3 conv (torchvision / pytorchvideo layout)
    assert model.res3.blocks[0].conv2.stride == (1, 2, 2) and model.res3.blocks[0].conv1.stride == (1, 1, 1)
    assert isinstance(model.res3.nonlocals["1"], OctNonLocal3d)
    c2d = build_model(full_cfg("c2d", 0.0))
    assert c2d.stem.conv.kernel_size == (1, 7, 7)
    assert all(b.conv1.kernel_size[0] == 1 for s in c2d.stage_names for b in getattr(c2d, s).blocks)


@pytest.mark.parametrize("arch", VIDEO_ARCHS)
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_full_size_models_on_odd_input(arch, alpha):
    model = build_model(full_cfg(arch, alpha, num_classes=600)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 8, 160, 120))
    assert y.shape == (1, 600) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5])
def test_gradients_reach_every_parameter(small_cfg, arch, alpha):
    model = build_model(small_cfg(arch, alpha))
    if arch.endswith("_nl"):  # a zero-initialised final BN blocks gradients to theta/phi/g at init
        for m in model.modules():
            if isinstance(m, (NonLocal3d, OctNonLocal3d)):
                nn.init.constant_(m.bn.weight, 0.5)
    x = torch.randn(2, 3, 4, 33, 47) if arch != "resnet" else torch.randn(2, 3, 33, 47)
    y = model(x)
    assert y.shape == (2, 7)
    y.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_reduced_model_shapes_on_various_inputs(small_cfg):
    model = build_model(small_cfg("i3d_nl", 0.25)).eval()
    for shape in [(1, 3, 8, 64, 64), (2, 3, 4, 31, 17), (1, 3, 1, 32, 32), (1, 3, 16, 56, 40)]:
        with torch.no_grad():
            assert model(torch.randn(*shape)).shape == (shape[0], 7)


def test_nonlocal_blocks_start_as_identity():
    x = torch.randn(2, 16, 2, 6, 5)
    assert torch.equal(NonLocal3d(16).eval()(x), x)
    high, low = torch.randn(2, 12, 2, 6, 5), torch.randn(2, 4, 2, 3, 3)
    out = OctNonLocal3d(16, 0.25).eval()((high, low))
    assert torch.equal(out[0], high) and torch.equal(out[1], low)


def test_wrong_input_raises_value_error_naming_expected_shape(small_cfg):
    model = build_model(small_cfg("i3d", 0.25))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\) with C=3"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\) with C=3"):
        model(torch.randn(1, 1, 4, 32, 32))
    model2d = build_model(small_cfg("resnet", 0.25))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model2d(torch.randn(1, 3, 4, 32, 32))


def test_unknown_arch_and_depth(small_cfg):
    with pytest.raises(ValueError, match="MODEL.ARCH='x3d'"):
        build_model(small_cfg("x3d", 0.0))
    with pytest.raises(ValueError, match="MODEL.DEPTH=34"):
        build_model(small_cfg("i3d", 0.0, depth=34))


@pytest.mark.parametrize("arch,shape", [("i3d_nl", (2, 3, 4, 32, 32)), ("resnet", (2, 3, 32, 32))])
def test_torch_compile_traces_whole_models_and_matches_eager(small_cfg, arch, shape):
    """MODEL.COMPILE: Dynamo traces every octave model as one graph (fullgraph=True raises on any
    graph break), training and inference, with eager's numbers. (backend="eager": the tracing,
    not inductor's code generation, is what the model code controls. Float64: train-mode BN on
    these tiny maps amplifies float32 rounding of the two op orders to ~1%.)"""
    cfg = small_cfg(arch, 0.25)
    cfg.MODEL.DROPOUT_RATE = 0.0
    model = build_model(cfg).double()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(*shape, dtype=torch.float64)
    w = torch.randn(shape[0], 7, dtype=torch.float64)
    (compiled(x) * w).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (model(x) * w).sum().backward()
    for a, b in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
