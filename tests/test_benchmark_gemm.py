"""The benchmark's ``gemm`` part: a 1x1 convolution as one matrix product computes the convolution
(values, gradients, memory format), the route through it trains a model to the same gradients and
leaves nothing patched, and the part times every routable convolution a step runs."""
import pytest
import torch
import torch.nn.functional as F

from octvideo.layers import OctConv3d
from octvideo.layers import octconv
from octvideo.models import build_model
from octvideo.utils import benchmark_gemm as bg

CL3D = torch.channels_last_3d


@pytest.mark.parametrize("shape,c_out", [((2, 6, 3, 5, 7), 25), ((1, 58, 2, 4, 4), 231), ((3, 12, 5, 6), 51)])
def test_gemm_form_equals_the_convolution_values_gradients_and_layout(shape, c_out):
    """Unaligned widths of alpha 0.1 (6, 58, 231, 25, 51), 3D and 2D, odd maps, batch above 1."""
    torch.manual_seed(0)
    fmt = CL3D if len(shape) == 5 else torch.channels_last
    conv = F.conv3d if len(shape) == 5 else F.conv2d
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(c_out, shape[1], *([1] * (len(shape) - 2)), dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    expected = conv(x, w, b)
    got = bg.conv1x1_gemm(x, w, b)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (x, w, b), g)
    # autograd through the GEMM form, and its explicit backward (as conv_nd_backward returns it)
    for grads in (torch.autograd.grad(got, (x, w, b), g),
                  bg.conv1x1_gemm_backward(g, x.detach(), w.detach(), (True, True, True))):
        for a, e in zip(grads, want):
            assert a.shape == e.shape
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    gi, gw, gb = bg.conv1x1_gemm_backward(g, x.detach(), w.detach(), (False, True, False))
    assert gi is None and gb is None and gw.shape == w.shape


def test_gemm_applicable_admits_only_single_matrix_products():
    x = torch.randn(1, 8, 2, 4, 4).contiguous(memory_format=CL3D)
    w = torch.randn(4, 8, 1, 1, 1)
    ones, zeros = (1, 1, 1), (0, 0, 0)
    assert bg.gemm_applicable(x, w, ones, zeros, 1)
    assert bg.gemm_applicable(x[:, :, :, :2].contiguous(memory_format=CL3D), w, ones, zeros, 1)
    refused = {
        "3x1x1 kernel": (x, torch.randn(4, 8, 3, 1, 1), ones, (1, 0, 0), 1),
        "stride 2": (x, w, (1, 2, 2), zeros, 1),
        "padding": (x, w, ones, (0, 1, 1), 1),
        "two groups": (x, torch.randn(4, 4, 1, 1, 1), ones, zeros, 2),
        "channels first": (x.contiguous(), w, ones, zeros, 1),
        "float64": (x.double(), w.double(), ones, zeros, 1),
    }
    for why, args in refused.items():
        assert not bg.gemm_applicable(*args), why
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bg.gemm_applicable(x, w, ones, zeros, 1)


def _step_grads(model, x, target):
    torch.manual_seed(1)  # the same dropout mask in both steps
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gemm_route_trains_to_the_same_gradients_and_restores_the_route(small_cfg, monkeypatch):
    """Forward 1x1 convolutions and the custom backward passes (h2l on the pooled input) both go
    through the matrix product inside the block; the loss and every gradient are the model's own
    (within float32 rounding); afterwards conv_nd, conv_nd_backward and the TF32 flag are as before."""
    torch.manual_seed(0)
    model = build_model(small_cfg("i3d", 0.25, width=16)).to(memory_format=CL3D).train()
    x = torch.randn(2, 3, 4, 32, 32).contiguous(memory_format=CL3D)
    target = torch.tensor([1, 3])
    native = (octconv.conv_nd, octconv.conv_nd_backward, torch.backends.cuda.matmul.allow_tf32)
    loss, grads = _step_grads(model, x, target)
    calls = {"forward": 0, "backward": 0}
    fwd, bwd = bg.conv1x1_gemm, bg.conv1x1_gemm_backward

    def count(kind, fn):
        def wrapped(*args):
            calls[kind] += 1
            return fn(*args)
        return wrapped
    monkeypatch.setattr(bg, "conv1x1_gemm", count("forward", fwd))
    monkeypatch.setattr(bg, "conv1x1_gemm_backward", count("backward", bwd))
    with bg.gemm_route(tf32=not native[2]):
        assert octconv.conv_nd is not native[0] and torch.backends.cuda.matmul.allow_tf32 is (not native[2])
        routed_loss, routed = _step_grads(model, x, target)
    assert (octconv.conv_nd, octconv.conv_nd_backward, torch.backends.cuda.matmul.allow_tf32) == native
    assert calls["forward"] > 0 and calls["backward"] > 0, calls
    assert abs(routed_loss - loss) < 1e-5
    for name, g in grads.items():
        scale = g.abs().max().clamp_min(1e-6)
        assert (routed[name] - g).abs().max() / scale < 1e-3, name  # float32 through batch norm of 2 clips


def test_benchmark_gemm_part_times_every_routable_convolution():
    """Opt-in; per shape the calls each model's step makes (for I3D: one per 1x1, stride-1
    convolution of the model), both forms forward and backward; whole calls per model and mode."""
    from octvideo.utils import benchmark as bm

    assert "gemm" in bm.PARTS and "gemm" not in bm.DEFAULT_PARTS
    settings = bm.Settings(parts=("gemm",), groups=("I3D",), models=("I3D", "Oct-I3D a=0.1"), size=32, frames=4,
                           repeats=1, warmup=0, modes=("train", "inference"), flops=False)
    result = bm.run(settings)
    shape_rows, call_rows = result["gemm"]
    i3d = bm.build_benchmark_model("i3d", 0.0)
    pointwise = [m for m in i3d.modules() if isinstance(m, OctConv3d)
                 and m.kernel_size == (1, 1, 1) and m.stride == (1, 1, 1)]
    assert sum(r.calls.get("I3D", 0) for r in shape_rows) == len(pointwise) > 0
    assert sum(r.calls.get("Oct-I3D a=0.1", 0) for r in shape_rows) > len(pointwise)
    # alpha 0.1's unaligned widths are among the shapes
    assert any(r.weight_shape[0] % 8 for r in shape_rows if "Oct-I3D a=0.1" in r.calls)
    for r in shape_rows:
        assert set(r.times) == {(impl, d) for impl in ("conv", "GEMM") for d in ("forward", "backward")}
        assert all(len(t) == 1 and t[0] > 0 for t in r.times.values())
    assert [(r.name, r.mode) for r in call_rows] == [
        ("I3D", "train"), ("Oct-I3D a=0.1", "train"), ("I3D", "inference"), ("Oct-I3D a=0.1", "inference")]
    assert call_rows[0].routed == len(pointwise) and all(set(r.times) == {"conv", "GEMM"} for r in call_rows)
    text = bm.report(result, markdown=True)
    assert "1x1 convolutions of a training step" in text and "| I3D | train | " in text
    assert "| I3D: all of the step's, forward + backward | " in text
    js = bm.to_json(result)["gemm"]
    assert len(js["shapes"]) == len(shape_rows) and js["calls"][0]["routed"] == len(pointwise)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
def test_benchmark_gemm_part_on_cuda_times_fp32_and_tf32_products():
    from octvideo.utils import benchmark as bm

    settings = bm.Settings(device="cuda", parts=("gemm",), groups=("I3D",), models=("I3D", "Oct-I3D a=0.1"),
                           size=32, frames=4, batch=2, repeats=1, warmup=1, modes=("train",), flops=False)
    shape_rows, call_rows = bm.run(settings)["gemm"]
    impls = ("conv", "GEMM fp32", "GEMM TF32")
    assert shape_rows and all(set(r.times) == {(i, d) for i in impls for d in ("forward", "backward")}
                              for r in shape_rows)
    assert all(set(r.times) == set(impls) for r in call_rows)
    # the routed step with TF32 off computes the model's own gradients
    model = bm.build_benchmark_model("i3d", 0.1).cuda().to(memory_format=CL3D).train()
    x = torch.randn(2, 3, 4, 32, 32, device="cuda").contiguous(memory_format=CL3D)
    target = torch.tensor([1, 3], device="cuda")
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        _, grads = _step_grads(model, x, target)
        with bg.gemm_route(tf32=False):
            _, routed = _step_grads(model, x, target)
    finally:
        torch.backends.cudnn.allow_tf32 = old
    for name, g in grads.items():
        scale = g.abs().max().clamp_min(1e-6)
        assert (routed[name] - g).abs().max() / scale < 1e-3, name
