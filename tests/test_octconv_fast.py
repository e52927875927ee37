"""The fast OctConv forward computes what the four-path reference computes (values and gradients)."""
import copy
import importlib.util
import itertools
import os
import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.layers import OctConv2d, OctConv3d, reference_mode, spatial_pool2x, upsample_to
from octvideo.layers.octave import add_upsampled, add_upsampled_, write_upsampled_sum
from octvideo.layers.octconv import conv_nd
from octvideo.models import build_model

CL3D = torch.channels_last_3d
CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
KERNELS = [(1, 1, 1), (1, 3, 3), (3, 1, 1), (3, 3, 3)]
SIZES = [(8, 8), (7, 5), (1, 1), (2, 3)]
# Even, odd and degenerate sizes, each in one memory format (both formats over the four).
SIZES_AND_FORMATS = [((8, 8), torch.contiguous_format), ((7, 5), CL3D), ((1, 1), torch.contiguous_format), ((2, 3), CL3D)]


def make_input(conv, n, t, hw, memory_format=torch.contiguous_format, dtype=torch.float64):
    high = torch.randn(n, conv.in_high, t, *hw, dtype=dtype).contiguous(memory_format=memory_format)
    if conv.in_low == 0:
        return high
    low = torch.randn(n, conv.in_low, t, (hw[0] + 1) // 2, (hw[1] + 1) // 2, dtype=dtype)
    return high, low.contiguous(memory_format=memory_format)


def outputs_and_grads(conv, x, fast):
    """Outputs and the gradients of a fixed random projection of them w.r.t. inputs and weights.

    ``fast``: True (the eager fast form), False (the reference) or "traceable" (the form
    torch.compile runs)."""
    inputs = [t.detach().clone().requires_grad_() for t in (x if isinstance(x, tuple) else (x,))]
    arg = tuple(inputs) if isinstance(x, tuple) else inputs[0]
    if fast == "traceable":
        y = traceable(conv, arg)
    elif fast:
        y = conv(arg)
    else:
        with reference_mode():
            y = conv(arg)
    ys = y if isinstance(y, tuple) else (y,)
    gen = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in ys)
    params = list(conv.parameters())
    grads = torch.autograd.grad(loss, inputs + params)
    return [o.detach() for o in ys], list(grads)


def traceable(conv, x):
    """What a compiled model runs for ``conv`` (:meth:`forward_traceable`), called eagerly."""
    if conv.is_plain:
        return conv(x)
    return conv.forward_traceable(*conv._split_input(x))


def assert_fast_matches_reference(conv, x):
    """Training (autograd) and inference (no_grad) forms of the fast path, eager and traceable, against the reference."""
    y_ref, g_ref = outputs_and_grads(conv, x, fast=False)
    for form in (True, "traceable"):
        y_fast, g_fast = outputs_and_grads(conv, x, fast=form)
        with torch.no_grad():
            y_infer = conv(x) if form is True else traceable(conv, x)
        y_infer = list(y_infer) if isinstance(y_infer, tuple) else [y_infer]
        assert [o.shape for o in y_fast] == [o.shape for o in y_ref] == [o.shape for o in y_infer]
        for a, b in zip(y_fast + g_fast + y_infer, y_ref + g_ref + y_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# groups 1 with a widening and a narrowing layer (the narrowing one takes pool_after_h2l for
# 1x1 kernels), groups 2 with channel counts every alpha splits evenly.
CHANNELS = {1: [(8, 12), (16, 6)], 2: [(16, 32)]}


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("alphas", [(0.0, 0.25), (0.25, 0.0), (0.5, 0.5), (0.125, 0.75), (0.25, 0.5)])
def test_fast_matches_reference_values_and_gradients(alphas, stride, groups):
    alpha_in, alpha_out = alphas
    torch.manual_seed(0)
    checked = 0
    # Every kernel with two of the four size/format cases, rotated across the parameter
    # sets so that every pairing is covered somewhere (keeps the test fast).
    offset = int(alpha_in * 8) + stride + groups
    cases = [(k, SIZES_AND_FORMATS[(i + j + offset) % 4]) for i, k in enumerate(KERNELS) for j in (0, 2)]
    for (cin, cout), (kernel, (hw, fmt)) in itertools.product(CHANNELS[groups], cases):
        padding = tuple(k // 2 for k in kernel)
        conv = OctConv3d(cin, cout, kernel, (1, stride, stride), padding, alpha_in=alpha_in, alpha_out=alpha_out,
                         groups=groups, bias=(checked % 3 == 0)).double()
        assert_fast_matches_reference(conv, make_input(conv, 2, 3, hw, fmt))
        checked += 1
    assert checked == len(CHANNELS[groups]) * len(KERNELS) * 2


@pytest.mark.parametrize("stack_low_paths", [False, True])
@pytest.mark.parametrize("pool_after_h2l", [False, True])
@pytest.mark.parametrize("kernel", [(1, 1, 1), (3, 1, 1)])
def test_every_fast_strategy_matches_reference(stack_low_paths, pool_after_h2l, kernel):
    """Inference strategies (stacked, pooled after) and the training form of h2h + h2l
    (stacked under autograd, pointwise_h2l, tied to pool_after_h2l here) against the reference."""
    conv = OctConv3d(8, 8, kernel, 1, (kernel[0] // 2, 0, 0), alpha_in=0.5, alpha_out=0.25, bias=True).double()
    conv.stack_low_paths, conv.pool_after_h2l, conv.pointwise_h2l = stack_low_paths, pool_after_h2l, pool_after_h2l
    conv.pointwise_h2l_min_pixels = 0
    for hw, fmt in itertools.product([(6, 4), (5, 7)], [torch.contiguous_format, CL3D]):
        assert_fast_matches_reference(conv, make_input(conv, 2, 4, hw, fmt))
    # The stacked forms run where autograd does not record: frozen weights, too.
    for p in conv.parameters():
        p.requires_grad_(False)
    x = make_input(conv, 2, 4, (5, 7), CL3D)
    with reference_mode():
        ref = conv(x)
    for a, b in zip(conv(x), ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("alpha_out", [0.25, 0.0])
def test_upsample_before_l2h_matches_reference(stride, alpha_out):
    """The joined [high, up(low)] form (eager inference and the traceable form), strided or not."""
    conv = OctConv3d(8, 16, 1, (1, stride, stride), 0, alpha_in=0.5, alpha_out=alpha_out, bias=True).double()
    conv.upsample_before_l2h = True
    for hw, fmt in itertools.product([(6, 4), (5, 7)], [torch.contiguous_format, CL3D]):
        assert_fast_matches_reference(conv, make_input(conv, 2, 3, hw, fmt))


def test_training_stacks_h2h_and_h2l_only_where_the_map_outweighs_the_weights(monkeypatch):
    """The stacked training form concatenates the two weights every step: for res4's 1x1
    1024 -> 256 at alpha 0.1 worth it on its 14x14 maps, not on 7x7 ones at batch 1
    (docs/benchmarks.md)."""
    import octvideo.layers.octconv as octconv_mod

    calls = []
    real = octconv_mod._StackedH2L.apply
    monkeypatch.setattr(octconv_mod._StackedH2L, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    conv = OctConv3d(1024, 256, 1, alpha_in=0.1, alpha_out=0.1)
    assert conv.pointwise_h2l
    for size, batch in ((7, 1), (7, 4), (14, 1)):
        calls.clear()
        high = torch.randn(batch, conv.in_high, 4, size, size, requires_grad=True)
        low = torch.randn(batch, conv.in_low, 4, (size + 1) // 2, (size + 1) // 2, requires_grad=True)
        out = conv((high, low))
        assert bool(calls) == (size * size * 4 * batch >= conv.pointwise_h2l_min_pixels), (size, batch)
        ref = conv.forward_reference(high, low)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert 4 * 7 * 7 < conv.pointwise_h2l_min_pixels <= 4 * 14 * 14


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha_out", [0.5, 0.0])
def test_strided_inference_is_two_convolutions_over_stacked_inputs(kernel, alpha_out, monkeypatch):
    """A spatial-stride-2 octave layer in inference: h2h + l2h as one convolution over
    [pool(high), low] and h2l + l2l as one over its pooled copy, for every kernel (nothing is
    up-sampled, so no kernel restriction): the reference's numbers in 2 (1 without a low
    output) convolution calls instead of 4 (2)."""
    import octvideo.layers.octconv as octconv

    padding = tuple(k // 2 for k in kernel)
    conv = OctConv3d(12, 16, kernel, (1, 2, 2), padding, alpha_in=0.5, alpha_out=alpha_out, bias=True).double()
    assert conv.join_strided
    for hw, fmt in itertools.product([(8, 6), (7, 5), (1, 3)], [torch.contiguous_format, CL3D]):
        x = make_input(conv, 2, 3, hw, fmt)
        calls = []
        real = octconv.conv_nd
        monkeypatch.setattr(octconv, "conv_nd", lambda inp, w, *a, **k: calls.append(tuple(w.shape)) or real(inp, w, *a, **k))
        with torch.no_grad():
            got = conv(x)
        monkeypatch.setattr(octconv, "conv_nd", real)
        assert [w[:2] for w in calls] == [(conv.out_high, 12)] + ([(conv.out_low, 12)] if conv.out_low else [])
        with reference_mode():
            ref = conv(x)
        for a, b in zip(got if alpha_out else [got], ref if alpha_out else [ref]):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        assert_fast_matches_reference(conv, x)  # training and traceable forms too
    # Not with groups (stacked input channels would land in other groups), nor depthwise.
    assert not OctConv3d(16, 16, 1, (1, 2, 2), alpha_in=0.5, alpha_out=0.5, groups=2).join_strided
    assert not OctConv3d(8, 8, (1, 3, 3), (1, 2, 2), (0, 1, 1), alpha_in=0.5, alpha_out=0.5, groups=8).join_strided
    assert not OctConv3d(16, 16, 1, 1, alpha_in=0.5, alpha_out=0.5).join_strided  # stride 1: l2h needs up-sampling


@pytest.mark.parametrize("upsample_before_l2h", [False, True])
def test_inference_never_uses_stale_merged_weights(upsample_before_l2h):
    """Stacked / joined weights are cached between inference calls; any change of a weight or a
    bias (in place, load_state_dict, a replaced parameter, a dtype change) must show in the output."""
    conv = OctConv3d(16, 16, 1, alpha_in=0.5, alpha_out=0.5, bias=True)
    conv.stack_low_paths, conv.pool_after_h2l, conv.upsample_before_l2h = True, not upsample_before_l2h, upsample_before_l2h
    x = make_input(conv, 1, 2, (6, 6), CL3D, dtype=torch.float32)

    def check():
        with torch.no_grad():
            got = conv(x)
            with reference_mode():
                ref = conv(x)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        return got

    first = check()
    with torch.no_grad():
        conv.l2h.weight.mul_(3.0)  # in place
    second = check()
    assert not torch.allclose(first[0], second[0])
    conv.load_state_dict({k: torch.randn_like(v) for k, v in conv.state_dict().items()})
    check()
    conv.h2l.bias = nn.Parameter(torch.randn(conv.out_low))  # a new parameter object
    check()
    with torch.no_grad():
        conv.l2l.weight.data = conv.l2l.weight.data * -1  # new storage under the same parameter
    check()
    conv.double()
    x = tuple(t.double() for t in x)
    check()


def test_copies_and_pickles_do_not_carry_the_inference_weight_cache():
    import copy
    import pickle

    conv = OctConv3d(16, 16, 1, alpha_in=0.5, alpha_out=0.5)
    x = make_input(conv, 1, 2, (6, 6), CL3D, dtype=torch.float32)
    with torch.no_grad():
        y = conv(x)
    assert conv.__dict__.get("_merged_cache")  # inference built it
    for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert "_merged_cache" not in clone.__dict__
        with torch.no_grad():
            for a, b in zip(clone(x), y):  # and the copy rebuilds it: same outputs
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_strategies_are_chosen_where_they_are_valid():
    wide_in = OctConv3d(256, 64, 1, alpha_in=0.1, alpha_out=0.1)
    assert wide_in.stack_low_paths and wide_in.pool_after_h2l
    assert not OctConv3d(64, 64, (1, 3, 3), 1, (0, 1, 1), alpha_in=0.1, alpha_out=0.1).pool_after_h2l  # 3x3: pool does not commute
    assert not OctConv3d(64, 256, 1, alpha_in=0.1, alpha_out=0.1).pool_after_h2l  # narrow input: pooling it is cheap
    grouped = OctConv3d(32, 16, 1, alpha_in=0.5, alpha_out=0.5, groups=2)
    assert not grouped.stack_low_paths and not grouped.pool_after_h2l


def test_inference_strategy_follows_the_input_device(monkeypatch):
    """The pointwise inference strategies come from the cost model of the input's device
    type. Res2's 3x1x1 256 -> 64 layer at alpha 0.5 pools after h2l on CUDA (fitted on an
    H200, where 1x1 convolutions are bound by memory traffic; docs/benchmarks.md) and runs its
    paths separately on the CPU; setting the attribute forces a strategy on every device."""
    import octvideo.layers.octconv as octconv_mod

    conv = OctConv3d(256, 64, (3, 1, 1), 1, (1, 0, 0), alpha_in=0.5, alpha_out=0.5).double()
    assert conv.inference_strategies["cuda"]["pool_after_h2l"] and not conv.inference_strategies["cpu"]["pool_after_h2l"]
    assert not conv.pool_after_h2l  # the property reads the CPU's choice
    widening = OctConv3d(64, 256, 1, alpha_in=0.5, alpha_out=0.5)
    assert all(plan["upsample_before_l2h"] for plan in widening.inference_strategies.values())

    pooled_after = []
    real = octconv_mod.spatial_mean2x
    monkeypatch.setattr(octconv_mod, "spatial_mean2x", lambda t: pooled_after.append(t.shape) or real(t))
    x = make_input(conv, 1, 3, (6, 6), CL3D)
    with torch.no_grad():
        ref = conv.forward_reference(*x)
        conv(x)
        assert not pooled_after  # a CPU input: the CPU's plan
        conv.inference_strategies["cpu"] = dict(conv.inference_strategies["cuda"])  # as on CUDA
        out = conv(x)
        assert pooled_after == [(1, conv.out_low, 3, 6, 6)]  # only h2l's 32 outputs pooled
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        conv.pool_after_h2l = False  # forced off everywhere
        assert not any(plan["pool_after_h2l"] for plan in conv.inference_strategies.values())
        pooled_after.clear()
        conv(x)
        assert not pooled_after


def test_depthwise_and_2d_fast_paths():
    conv = OctConv3d(8, 8, (1, 3, 3), 1, (0, 1, 1), alpha_in=0.5, alpha_out=0.5, groups=8).double()
    assert_fast_matches_reference(conv, make_input(conv, 2, 2, (7, 6)))
    for stride, (cin, cout), hw in itertools.product([1, 2], [(8, 12), (16, 6)], SIZES):
        for kernel in (1, 3):
            conv2d = OctConv2d(cin, cout, kernel, stride, kernel // 2, alpha_in=0.25, alpha_out=0.5).double()
            high = torch.randn(2, conv2d.in_high, *hw, dtype=torch.float64)
            low = torch.randn(2, conv2d.in_low, (hw[0] + 1) // 2, (hw[1] + 1) // 2, dtype=torch.float64)
            assert_fast_matches_reference(conv2d, (high, low))


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (3, 5), (6, 7), (8, 8), (5, 2)])
def test_add_upsampled_equals_materialised_upsample(hw):
    high = torch.randn(2, 3, 2, *hw, dtype=torch.float64)
    low = torch.randn(2, 3, 2, (hw[0] + 1) // 2, (hw[1] + 1) // 2, dtype=torch.float64, requires_grad=True)
    expected = high + upsample_to(low, hw)
    with torch.no_grad():
        torch.testing.assert_close(add_upsampled_(high.clone(), low), expected, rtol=0, atol=0)
    got = add_upsampled(high, low)  # the autograd form: a new tensor, block-sum gradient
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    g = torch.randn_like(high)
    (grad_fast,) = torch.autograd.grad((got * g).sum(), low)
    (grad_ref,) = torch.autograd.grad((expected * g).sum(), low)
    torch.testing.assert_close(grad_fast, grad_ref)
    with pytest.raises(ValueError, match="up-sample"):
        add_upsampled_(high.clone(), torch.zeros(2, 3, 2, hw[0] + 2, hw[1] + 2, dtype=torch.float64))
    # Channel slices of channels_last_3d memory (stacked convolution outputs), in place and
    # written to a third tensor: the other channels are left alone.
    wide = torch.randn(2, 7, 2, *hw, dtype=torch.float64).contiguous(memory_format=CL3D)
    low_wide = torch.randn(2, 5, 2, *low.shape[-2:], dtype=torch.float64).contiguous(memory_format=CL3D)
    before = wide.clone()
    with torch.no_grad():
        add_upsampled_(wide[:, 2:5], low_wide[:, 1:4])
    torch.testing.assert_close(wide[:, 2:5], before[:, 2:5] + upsample_to(low_wide[:, 1:4], hw), rtol=0, atol=0)
    torch.testing.assert_close(wide[:, :2], before[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(wide[:, 5:], before[:, 5:], rtol=0, atol=0)
    out = torch.empty(2, 3, 2, *hw, dtype=torch.float64).contiguous(memory_format=CL3D)
    write_upsampled_sum(before[:, 2:5], low_wide[:, 1:4], out)
    torch.testing.assert_close(out, wide[:, 2:5], rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(8, 6), (7, 5), (1, 1)])
def test_spatial_pool_keeps_memory_format_and_values(hw):
    x = torch.randn(2, 5, 3, *hw)
    ref = spatial_pool2x(x)
    cl = spatial_pool2x(x.contiguous(memory_format=CL3D))
    torch.testing.assert_close(cl, ref)
    if hw[0] % 2 == 0:
        assert cl.is_contiguous(memory_format=CL3D)
    # A channel slice of channels_last_3d memory (what pool_after_h2l pools) gives the same values.
    wide = torch.randn(2, 9, 3, *hw).contiguous(memory_format=CL3D)
    torch.testing.assert_close(spatial_pool2x(wide[:, 4:]), spatial_pool2x(wide[:, 4:].contiguous()))


@pytest.mark.parametrize("shape,fmt", [((2, 6, 3, 8, 6), CL3D), ((2, 6, 8, 6), torch.channels_last)])
def test_block_mean_pool_equals_avg_pool_and_stays_channels_last(shape, fmt):
    """The one-reduction 2x2 pool that CUDA runs for dense channels-last maps (block_mean2x):
    avg_pool's numbers, its gradient, the input's layout kept."""
    from octvideo.layers.octave import block_mean2x

    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    y = block_mean2x(x)
    assert y.shape == shape[:-2] + (shape[-2] // 2, shape[-1] // 2) and y.is_contiguous(memory_format=fmt)
    plain = x.detach().contiguous().requires_grad_()
    ref = F.avg_pool3d(plain, (1, 2, 2)) if len(shape) == 5 else F.avg_pool2d(plain, 2)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, plain.grad)


@CUDA_ONLY
@pytest.mark.parametrize("hw", [(8, 6), (7, 5)])
def test_spatial_pool_on_cuda_equals_the_cpu_pool(hw):
    """On CUDA, spatial_pool2x takes block_mean2x for dense channels-last maps of even size and
    avg_pool2d otherwise (odd sizes, channel slices): the CPU's numbers and layout either way."""
    x = torch.randn(2, 9, 3, *hw).contiguous(memory_format=CL3D)
    for t in (x, x[:, 4:]):
        y = spatial_pool2x(t.cuda())
        torch.testing.assert_close(y.cpu(), spatial_pool2x(t), rtol=1e-5, atol=1e-6)
        if t is x and hw[0] % 2 == 0:
            assert y.is_contiguous(memory_format=CL3D)


@CUDA_ONLY
@pytest.mark.parametrize("shape,fmt", [((2, 9, 3, 8, 6), CL3D), ((2, 9, 3, 7, 5), CL3D), ((2, 9, 3, 8, 6), torch.contiguous_format),
                                       ((2, 9, 8, 6), torch.channels_last)])
def test_pool_gradient_on_cuda_equals_the_cpu_gradient(shape, fmt):
    """pool2x_grad (the backward of the octave pools) on CUDA, where channels-last maps of even
    size take one broadcast copy into the 2x2 blocks: the CPU's gradient, in the layout asked."""
    from octvideo.layers.octave import pool2x_grad

    pooled = shape[:-2] + ((shape[-2] + 1) // 2, (shape[-1] + 1) // 2)
    g = torch.randn(pooled).contiguous(memory_format=fmt)
    ref = pool2x_grad(g, shape, fmt)
    out = pool2x_grad(g.cuda(), shape, fmt)
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [((1, 1, 1), (1, 1, 1), (0, 0, 0)), ((3, 1, 1), (1, 1, 1), (1, 0, 0)), ((3, 1, 1), (2, 1, 1), (1, 0, 0)),
     ((1, 3, 3), (1, 1, 1), (0, 1, 1)), ((1, 3, 3), (1, 2, 2), (0, 1, 1)), ((3, 3, 3), (1, 1, 1), (1, 1, 1))],
)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL3D])
def test_conv_nd_equals_conv3d_values_gradients_and_memory_format(kernel, stride, padding, fmt):
    """conv_nd is F.conv3d (float32, where it calls oneDNN directly), and keeps channels_last_3d."""
    torch.manual_seed(0)
    x = torch.randn(1, 6, 5, 9, 7).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(4, 6, *kernel, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = conv_nd(x, w, b, stride, padding)
    ref = F.conv3d(x, w, b, stride, padding)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    if fmt is CL3D:
        assert y.is_contiguous(memory_format=CL3D)
    g = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    x2 = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last)
    w2 = torch.randn(4, 6, 3, 3)
    torch.testing.assert_close(conv_nd(x2, w2, None, (2, 2), (1, 1)), F.conv2d(x2, w2, None, 2, 1), rtol=1e-5, atol=1e-5)
    # Inference (pre-packed weights on channels-last input): the same values, twice (the
    # second call reuses the pack), and again after the weight changes in place.
    with torch.no_grad():
        ref = F.conv3d(x, w, b, stride, padding)
        for _ in range(2):
            y = conv_nd(x.detach(), w, b, stride, padding)
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
            assert y.is_contiguous(memory_format=CL3D) if fmt is CL3D else True
        w.mul_(-2.0)
        torch.testing.assert_close(conv_nd(x.detach(), w, b, stride, padding), F.conv3d(x, w, b, stride, padding),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv_nd(x2, w2, None, (2, 2), (1, 1)), F.conv2d(x2, w2, None, 2, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA_ONLY)])
# (arch, alpha, OCT.CHANNEL_MULTIPLE): the fast path picks its strategies from the branch widths,
# and the aligned split (tests/test_channel_multiple.py) gives it other widths than the official one.
@pytest.mark.parametrize("arch,alpha,multiple", [("i3d", 0.25, 1), ("c2d", 0.5, 1), ("resnet", 0.5, 1), ("i3d", 0.0, 1),
                                                 ("i3d", 0.1, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_model_fast_forward_matches_reference(small_cfg, arch, alpha, multiple, channels_last, device):
    torch.manual_seed(0)
    cfg = small_cfg(arch, alpha, width=8 if multiple == 1 else 16)
    cfg.OCT.CHANNEL_MULTIPLE = multiple
    cfg.MODEL.DROPOUT_RATE = 0.0
    model = build_model(cfg).double().train().to(device)
    x = torch.randn(2, 3, 4, 33, 47) if arch != "resnet" else torch.randn(2, 3, 33, 47)
    x = x.double().to(device)
    if channels_last:
        fmt = torch.channels_last_3d if arch != "resnet" else torch.channels_last
        model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)

    def run(reference):
        model.zero_grad(set_to_none=True)
        if reference:
            with reference_mode():
                y = model(x)
        else:
            y = model(x)
        y.logsumexp(1).sum().backward()
        return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    y_fast, g_fast = run(False)
    y_ref, g_ref = run(True)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-9, atol=1e-9)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")


def test_float32_fast_forward_within_rounding_of_reference(small_cfg):
    """In float32 the two forms differ only by summation order: relative error ~1e-6."""
    torch.manual_seed(0)
    model = build_model(small_cfg("i3d", 0.5, width=16)).eval().to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 3, 4, 64, 64).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        y = model.forward_features(x)
        with reference_mode():
            r = model.forward_features(x)
    assert ((y - r).abs().max() / r.abs().max()).item() < 1e-5


def test_float32_training_gradients_within_rounding_of_reference(small_cfg):
    """The oneDNN training path (float32, channels_last_3d: stacked h2h + h2l with its own
    backward, frames folded into the batch) gives the reference's gradients up to rounding."""
    torch.manual_seed(0)
    cfg = small_cfg("i3d", 0.25, width=16)
    cfg.MODEL.DROPOUT_RATE = 0.0
    model = build_model(cfg).train().to(memory_format=CL3D)
    x = torch.randn(2, 3, 4, 48, 48).contiguous(memory_format=CL3D)

    def grads(reference):
        model.zero_grad(set_to_none=True)
        with reference_mode() if reference else torch.enable_grad():
            model(x).logsumexp(1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast, ref = grads(False), grads(True)
    for name in ref:
        scale = ref[name].abs().max().clamp_min(1e-6)
        assert (fast[name] - ref[name]).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize("kernel,padding", [((1, 1, 1), (0, 0, 0)), ((3, 1, 1), (1, 0, 0)), ((1, 3, 3), (0, 1, 1))])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL3D])
def test_conv_nd_backward_equals_autograd(kernel, padding, fmt):
    from octvideo.layers.octconv import conv_nd_backward

    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 10, 10).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(6, 8, *kernel, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    y = F.conv3d(x, w, b, 1, padding)
    g = torch.randn_like(y)
    expected = torch.autograd.grad(y, (x, w, b), g)
    got = conv_nd_backward(g, x.detach(), w.detach(), (1, 1, 1), padding, 1, [True, True, True])
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("hw,fmt", [((8, 8), CL3D), ((7, 9), CL3D), ((6, 5), torch.contiguous_format), ((1, 3), CL3D)])
@pytest.mark.parametrize("kernel,padding", [((1, 1, 1), (0, 0, 0)), ((1, 3, 3), (0, 1, 1)), ((3, 1, 1), (1, 0, 0))])
def test_conv_of_pooled_gradients_equal_autograd_of_pool_then_conv(levels, hw, fmt, kernel, padding):
    """The h2l / strided-path convolution that keeps only its un-pooled input: float32 on the
    oneDNN kernels, its backward (pool recomputed, convolution backward, gradient up-sampled
    through the pools, odd borders included) gives autograd's gradients of pool-then-conv."""
    from octvideo.layers.octconv import _ConvOfPooled

    torch.manual_seed(levels + hw[1])
    x = torch.randn(2, 8, 3, *hw).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(6, 8, *kernel).contiguous(memory_format=fmt if fmt is CL3D else torch.contiguous_format)
    w.requires_grad_()
    b = torch.randn(6, requires_grad=True)
    pooled = x
    for _ in range(levels):
        pooled = spatial_pool2x(pooled)
    y_ref = F.conv3d(pooled, w, b, 1, padding)
    g = torch.randn_like(y_ref)
    expected = torch.autograd.grad(y_ref, (x, w, b), g)
    y = _ConvOfPooled.apply(x, w, b, (1, 1, 1), padding, 1, levels)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    got = torch.autograd.grad(y, (x, w, b), g)
    for name, a, e in zip("xwb", got, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4, msg=lambda m: f"grad {name}: {m}")
    assert got[0].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("alphas", [(0.0, 0.5), (0.5, 0.5), (0.5, 0.0)])
@pytest.mark.parametrize("fmt", [CL3D, torch.contiguous_format])
def test_training_outputs_take_in_place_ops_like_the_reference(alphas, fmt):
    """``relu_`` straight on a training-mode output (no BN between, as a user's block may do)
    works and gives the reference's values and gradients. Autograd forbids in-place changes to
    a view returned by a custom Function, and the pooled / frames-folded outputs are made
    through views."""
    alpha_in, alpha_out = alphas
    for kernel, stride in itertools.product([1, 3], [1, 2]):
        torch.manual_seed(kernel + stride)
        conv = OctConv3d(16, 16, (1, kernel, kernel), (1, stride, stride), (0, kernel // 2, kernel // 2),
                         alpha_in=alpha_in, alpha_out=alpha_out).to(memory_format=fmt)
        x = make_input(conv, 1, 2, (8, 8), fmt, torch.float32)

        def run(reference):
            inputs = [t.clone().requires_grad_() for t in (x if isinstance(x, tuple) else (x,))]
            conv.zero_grad(set_to_none=True)
            with reference_mode() if reference else torch.enable_grad():
                out = conv(tuple(inputs) if isinstance(x, tuple) else inputs[0])
            outs = out if isinstance(out, tuple) else (out,)
            for o in outs:
                torch.relu_(o)
            sum((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in outs).backward()
            return [o.detach() for o in outs] + [t.grad for t in inputs] + [p.grad for p in conv.parameters()]

        for got, expected in zip(run(False), run(True)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=lambda m: f"k={kernel} s={stride}: {m}")


def test_channels_last_3d_survives_an_octave_block(small_cfg):
    """A channels_last_3d model keeps that layout through every octave layer (no silent copies back)."""
    model = build_model(small_cfg("i3d", 0.25, width=16)).eval().to(memory_format=torch.channels_last_3d)
    seen = []

    def hook(module, inputs, output):
        for t in output if isinstance(output, tuple) else (output,):
            seen.append((type(module).__name__, t.stride(1) == 1))

    for m in model.modules():
        if isinstance(m, (OctConv3d, nn.BatchNorm3d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 64, 64).contiguous(memory_format=torch.channels_last_3d))
    assert seen and all(ok for _, ok in seen), [s for s in seen if not s[1]]


@pytest.mark.parametrize("arch,alpha", [("i3d", 0.1), ("resnet", 0.5)])
def test_models_train_on_the_meta_device_like_on_the_cpu(small_cfg, arch, alpha, monkeypatch):
    """Deferred initialisation / shape inference: a model on the meta device (which autocast
    does not know) runs the fast training forward, its custom autograd Functions included,
    and gives the CPU model's output shape and a gradient for every parameter."""
    import octvideo.layers.octconv as octconv

    calls = {"_ConvOfPooled": 0, "_StackedH2L": 0}
    for name in calls:
        fn = getattr(octconv, name)

        def counted(*args, _apply=fn.apply, _name=name):
            calls[_name] += 1
            return _apply(*args)

        monkeypatch.setattr(fn, "apply", counted)
    cfg = small_cfg(arch, alpha, width=16)
    shape = (2, 3, 4, 64, 64) if arch != "resnet" else (2, 3, 64, 64)
    cpu_model = build_model(cfg).eval()
    with torch.no_grad():
        expected = cpu_model(torch.randn(shape)).shape
    model = build_model(cfg).to("meta").train()
    y = model(torch.empty(shape, device="meta"))
    y.sum().backward()
    assert y.shape == expected and y.device.type == "meta"
    assert calls["_ConvOfPooled"] > 0 and calls["_StackedH2L"] > 0, calls
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.device.type == "meta", name
    with torch.no_grad():
        assert model.eval()(torch.empty(shape, device="meta")).shape == expected


# ---------------------------------------------------------------------------- benchmark tool
def test_saved_tensor_bytes_counts_each_storage_once():
    from octvideo.utils.benchmark import saved_tensor_bytes

    conv = nn.Conv3d(4, 8, 1, bias=False)
    x = torch.randn(1, 4, 2, 6, 6, requires_grad=True)
    # conv saves its input (x) and weight (excluded); the in-place ReLU saves its output,
    # which is the conv output's storage: x + one (1, 8, 2, 6, 6) tensor.
    nbytes, y = saved_tensor_bytes(lambda: F.relu_(conv(x)), exclude=list(conv.parameters()))
    assert nbytes == x.nbytes + y.nbytes


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL3D])
def test_training_fast_path_saves_no_more_for_backward_than_the_reference(small_cfg, fmt):
    """Under autograd no stacked weights or stacked outputs are kept alive: memory <= reference.
    (Both layouts: with batch 1 a channel slice of contiguous memory is itself contiguous.)"""
    from octvideo.utils.benchmark import saved_tensor_bytes

    model = build_model(small_cfg("i3d", 0.5, width=16)).train().to(memory_format=fmt)
    x = torch.randn(1, 3, 4, 64, 64).contiguous(memory_format=fmt)
    params = list(model.parameters())
    fast, _ = saved_tensor_bytes(lambda: model(x), exclude=params)
    with reference_mode():
        ref, _ = saved_tensor_bytes(lambda: model(x), exclude=params)
    assert 0 < fast <= ref


def test_benchmark_memory_part_shows_the_octave_saving():
    from octvideo.utils import benchmark as bm

    settings = bm.Settings(parts=("memory",), groups=("ResNet-50",), size=64, flops=False)
    result = bm.run(settings)
    saved = {r.name: r.saved_bytes for r in result["models"]}
    assert 0 < saved["Oct-ResNet-50 a=0.5"] < saved["ResNet-50"]
    text = bm.report(result, markdown=True)
    assert "| Oct-ResNet-50 a=0.5 |" in text


@CUDA_ONLY
def test_benchmark_cuda_peak_of_a_step_ignores_the_other_resident_models():
    from octvideo.utils import benchmark as bm

    device = torch.device("cuda")
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1)).to(device)
    x = torch.randn(2, 3, 64, 64, device=device)
    step = lambda: model(x).sum().backward()  # noqa: E731
    alone = bm.cuda_step_peak_bytes(step, model, [model], device)
    # A second model: 64 MiB of weights, and 64 MiB of gradients left over from its own step.
    other = nn.Linear(4096, 4096).to(device)
    other(torch.randn(1, 4096, device=device)).sum().backward()
    beside = bm.cuda_step_peak_bytes(step, model, [model, other], device)
    activations = 2 * 64 * 64 * 64 * 4  # the first convolution's output, kept for backward
    assert alone > activations
    assert abs(beside - alone) < 2**20, (alone, beside)
    assert all(p.grad is None for p in other.parameters())


@CUDA_ONLY
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_training_step_tracks_float32(small_cfg, dtype):
    """TRAIN.MIXED_PRECISION bf16 / fp16 on CUDA: under autocast the fast path's logits follow the
    float32 reference, and its weight gradients are as close to the float32 ones as the four-path
    reference's gradients under the same autocast (the low precision's own rounding: on an H200 the
    gradient cosine to float32 is about 0.87 in bf16 and 0.98 in fp16 for this small random net,
    for both paths)."""
    torch.manual_seed(0)
    cfg = small_cfg("i3d", 0.5, width=16)
    cfg.MODEL.DROPOUT_RATE = 0.0
    model = build_model(cfg).cuda().train().to(memory_format=CL3D)
    x = torch.randn(2, 3, 4, 64, 64, device="cuda").contiguous(memory_format=CL3D)

    def step(low_precision, reference):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=low_precision), (
                reference_mode() if reference else torch.enable_grad()):
            y = model(x)
        y.float().logsumexp(1).sum().backward()
        return y.detach().float(), torch.cat([p.grad.float().flatten() for p in model.parameters()])

    y32, g32 = step(False, True)
    y_ref, g_ref = step(True, True)
    y, g = step(True, False)
    assert y.shape == y32.shape and torch.isfinite(g).all()
    assert (y - y32).abs().max() <= 0.1 * y32.abs().max(), (y - y32).abs().max()
    cos_fast, cos_ref = F.cosine_similarity(g, g32, dim=0), F.cosine_similarity(g_ref, g32, dim=0)
    assert cos_ref > 0.8 and cos_fast >= cos_ref - 0.05, (cos_fast, cos_ref)


@CUDA_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_octave_batch_norm_on_cuda_routes_large_unaligned_widths_off_cudnn(dtype):
    """Training-mode OctBatchNorm on CUDA: a large float32 channels-last branch whose width is not a
    multiple of 4 takes PyTorch's kernels on its (pixels, channels) matrix; a small one, and bf16
    (autocast's input, not on cuDNN anyway), keep nn.BatchNorm3d. All give nn.BatchNorm3d's output,
    running statistics and gradients."""
    from octvideo.layers import OctBatchNorm
    from octvideo.layers.octave import _MATRIX_BN_MIN_NUMEL

    torch.manual_seed(0)
    bn = OctBatchNorm(64, 0.1).cuda()  # 58 high, 6 low channels
    ref = copy.deepcopy(bn)
    n = -(-_MATRIX_BN_MIN_NUMEL // (58 * 4 * 56 * 56))
    x = (torch.randn(n, 58, 4, 56, 56, device="cuda", dtype=dtype).contiguous(memory_format=CL3D),
         torch.randn(n, 6, 4, 8, 8, device="cuda", dtype=dtype).contiguous(memory_format=CL3D))
    g = tuple(torch.randn_like(t) for t in x)
    results = []
    for module, route in ((bn, True), (ref, False)):
        xi = tuple(t.clone().requires_grad_() for t in x)
        y = module(xi) if route else (module.h(xi[0]), module.l(xi[1]))
        names = [type(t.grad_fn).__name__ for t in y]
        torch.autograd.backward([torch.relu(t) for t in y], g)
        results.append((y, [t.grad for t in xi], [p.grad for p in module.parameters()], module.state_dict()))
        if route:
            routed = [name.startswith("_MatrixBatchNorm") for name in names]
            assert routed == [dtype == torch.float32, False], names
    assert results[0][0][0].is_contiguous(memory_format=CL3D)
    low = dtype == torch.bfloat16
    for a, b in zip(results[0][0] + tuple(results[0][1]), results[1][0] + tuple(results[1][1])):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2 if low else 1e-4, atol=2e-2 if low else 1e-4)
    for a, b in zip(results[0][2], results[1][2]):  # sums over about a million pixels
        torch.testing.assert_close(a, b, rtol=2e-2 if low else 1e-3, atol=1.0 if low else 1e-2)
    for key, value in results[1][3].items():
        torch.testing.assert_close(results[0][3][key], value, rtol=1e-4, atol=1e-5, msg=key)


@CUDA_ONLY
def test_benchmark_cuda_run_times_every_format_precision_and_mode():
    from octvideo.utils import benchmark as bm

    # Models only, two of them: the layer part runs full-size ResNet stage shapes, and cudnn
    # autotunes every new shape in every format and precision; with the layer part this test had
    # not finished after two minutes on an H200, with the four I3D-group models not after 150 s.
    settings = bm.Settings(device="cuda", parts=("models", "memory"), groups=("I3D",), size=32, frames=4,
                           models=("I3D", "Oct-I3D a=0.5"),
                           modes=("inference", "train"), flops=False, repeats=2, warmup=1,
                           memory_formats=("channels_last", "contiguous"), precisions=("fp32", "bf16"))
    result = bm.run(settings)
    keys = {(f, p, m) for f in settings.memory_formats for p in settings.precisions for m in settings.modes}
    for r in result["models"]:
        if r.skipped:  # pytorchvideo's I3D has a fixed 8x224x224 head
            continue
        assert set(r.times) == keys and all(len(t) == 2 and min(t) > 0 for t in r.times.values()), r.name
        weights = sum(p.numel() * 4 for p in bm.build_benchmark_model(r.arch, r.alpha).parameters())
        # the step's peak holds at least the weights and their gradients
        assert all(v >= 2 * weights for v in r.cuda_peak_bytes.values()) and len(r.cuda_peak_bytes) == 4, r.name
    assert "CUDA peak MiB channels_last bf16" in bm.report(result, markdown=True)


def test_benchmark_overhead_part_counts_what_each_call_dispatches():
    from octvideo.utils import benchmark as bm

    assert "overhead" not in bm.Settings().parts  # opt-in: one profiled call per model
    settings = bm.Settings(parts=("overhead",), groups=("I3D",), size=32, frames=4, repeats=1, warmup=1,
                           modes=("inference", "fused", "train"), flops=False)
    result = bm.run(settings)
    rows = {(r.name, r.mode): r for r in result["overhead"]}
    # "fused" belongs to the models part; pytorchvideo's fixed head needs 8x224x224 clips
    assert {m for _, m in rows} == {"inference", "train"}
    assert {n for n, _ in rows} == {"I3D", "Oct-I3D a=0.1", "Oct-I3D a=0.25", "Oct-I3D a=0.5"}
    for mode in ("inference", "train"):
        i3d, oct01 = rows[("I3D", mode)], rows[("Oct-I3D a=0.1", mode)]
        # Two branches per layer: the octave model dispatches about three times I3D's operators,
        # which is what makes it host-bound on a GPU (docs/benchmarks.md, CUDA).
        assert oct01.host_events > 2 * i3d.host_events > 0
        assert oct01.eager_ms > 0 and oct01.graph_ms is None and oct01.kernels is None  # no CUDA here
    assert rows[("I3D", "train")].host_events > 2 * rows[("I3D", "inference")].host_events  # the backward's
    # The call's time split by kind: convolutions everywhere; I3D has no up-sampling, the octave
    # model's low-to-high path up-samples (its backward too); kinds are KERNEL_KINDS entries.
    for (name, mode), r in rows.items():
        assert r.kinds.get("convolution", 0) > 0 and set(r.kinds) <= set(bm.KERNEL_KINDS), (name, mode, r.kinds)
    assert "up-sample" not in rows[("I3D", "train")].kinds and rows[("Oct-I3D a=0.5", "train")].kinds["up-sample"] > 0
    text = bm.report(result, markdown=True)
    assert "Host overhead (channels_last" in text and "| Oct-I3D a=0.5 | train | fp32 |" in text
    assert "operator self time (no device kernels on the CPU) by kind" in text and "| convolution ms |" in text
    assert [r["host_events"] for r in bm.to_json(result)["overhead"]] == [r.host_events for r in result["overhead"]]


def test_kernel_kind_sorts_cuda_kernels_and_cpu_operators():
    """Kernel names as the profiler reports them on an NVIDIA GPU (cuDNN, cuBLAS, ATen, inductor)
    and ATen operators on the CPU, each in the kind the overhead part adds it to."""
    from octvideo.utils.benchmark import kernel_kind

    cases = {
        "sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize128x128x32": "convolution",
        "sm90_xmma_dgrad_implicit_gemm_indexed_tf32f32": "convolution",
        "void cudnn::bn_fw_inf_1C11_kernel_NCHW<float, float, true, 1>(float, float)": "batch norm",
        "void at::native::batch_norm_collect_statistics_channels_last_kernel<...>": "batch norm",
        "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x64x32": "matmul",
        "triton_poi_fused__native_batch_norm_legit_no_training_add_relu_12": "compiled fusion",
        "triton_red_fused_avg_pool3d_convolution_3": "compiled fusion",
        "void at::native::(anonymous namespace)::avg_pool3d_cuda_update_output<float, float>": "pool",
        "void at::native::(anonymous namespace)::upsample_nearest3d_out_frame<float>": "up-sample",
        "void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, false>": "copy / layout",
        "void nhwcAddPaddingKernel<float, float, float, true, (cudnnKernelDataType_t)0>(int, int, int)": "copy / layout",
        "void at::native::reduce_kernel<128, 4, at::native::ReduceOp<float, at::native::MeanOps<float, float, "
        "float, float>, unsigned int, float, 4, 4> >(at::native::ReduceOp<float>)": "pool",
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
        "at::native::sum_functor<float, float, float>>, unsigned int, float, 4, 4> >()": "other",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>": "element-wise",
        "aten::mkldnn_convolution": "convolution",
        "autograd::engine::evaluate_function: ConvolutionBackward0": "convolution",
        "aten::native_batch_norm": "batch norm",
        "aten::max_pool3d_with_indices": "pool",
        "aten::upsample_nearest3d": "up-sample",
        "aten::mean": "pool",
        "aten::addmm": "matmul",
        "aten::add_": "element-wise",
        "aten::copy_": "copy / layout",
        "aten::empty": "other",
    }
    assert {n: kernel_kind(n) for n in cases} == cases


def test_benchmark_overhead_part_profiles_the_compiled_call(monkeypatch):
    """With --compile the overhead part times and profiles the compiled models (inference as the
    test runs it, compile_for_inference; training with torch.compile) and captures no graph of
    its own. Compilation itself is replaced here by recording wrappers (minutes on 2 CPU cores)."""
    from octvideo.utils import benchmark as bm

    wrapped = []

    class Recorded(nn.Module):
        def __init__(self, model, how, mode):
            super().__init__()
            self.model = model
            wrapped.append((how, mode))

        def forward(self, x):
            return self.model(x)

    monkeypatch.setattr(bm, "compile_for_inference", lambda m, mode: Recorded(m, "inference", mode))
    monkeypatch.setattr(bm.torch, "compile", lambda m, mode: Recorded(m, "train", mode))
    settings = bm.Settings(parts=("overhead",), groups=("I3D",), models=("I3D", "Oct-I3D a=0.5"), size=32, frames=4,
                           repeats=1, warmup=1, modes=("inference", "train"), flops=False, compile=True,
                           compile_mode="max-autotune-no-cudagraphs")
    result = bm.run(settings)
    assert sorted(wrapped) == sorted([(how, "max-autotune-no-cudagraphs") for how in ("inference", "train")] * 2)
    assert len(result["overhead"]) == 4 and all(r.graph_ms is None and not r.graph_error for r in result["overhead"])
    assert "compiled calls, torch.compile mode max-autotune-no-cudagraphs" in bm.report(result)


@CUDA_ONLY
def test_benchmark_overhead_part_replays_cuda_graphs_and_counts_kernels():
    from octvideo.utils import benchmark as bm

    settings = bm.Settings(device="cuda", parts=("overhead",), groups=("I3D",), size=32, frames=4, repeats=3,
                           warmup=1, modes=("inference", "train"), precisions=("fp32", "bf16"), flops=False)
    result = bm.run(settings)
    assert len(result["overhead"]) == 4 * 2 * 2
    for r in result["overhead"]:
        assert r.kernels > 0 and r.kernel_ms > 0, r
        # the replay (a training step captured whole) runs the call's kernels without the host:
        # not slower than the eager call
        assert not r.graph_error and 0 < r.graph_ms < 1.5 * r.eager_ms, r


@CUDA_ONLY
def test_cuda_graph_of_a_training_step_replays_the_eager_gradients():
    """The overhead part's graph of a training step runs the backward on every replay: after the
    gradient buffers are zeroed, a replay writes the eager step's gradients into them again (and
    a second replay overwrites rather than accumulates). Dropout is off: a replay draws a new
    mask, so with it on the gradients differ from the eager step's by design."""
    from octvideo.utils import benchmark as bm

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = bm.build_benchmark_model("i3d", 0.5).to(device).train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()  # the head's dropout draws a new mask per replay; the rest is deterministic
    x = torch.randn(2, 3, 4, 32, 32, device=device)
    target = torch.tensor([3, 7], device=device)
    step = bm._graph_call(model, "train", x, target, "fp32", device)
    step()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    graph = bm.capture_cuda_graph(step, device)
    for replays in (1, 2):
        for p in model.parameters():
            p.grad.zero_()
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
        for n, p in model.named_parameters():
            scale = eager[n].abs().max().item()
            assert scale > 0, n
            assert (p.grad - eager[n]).abs().max().item() <= 1e-3 * scale + 1e-7, (replays, n)


def test_benchmark_models_option_runs_only_the_named_models():
    """--models picks rows of the selected groups by their table names; a name not among them
    is an error naming it (and the names there are)."""
    from octvideo.utils import benchmark as bm

    settings = bm.Settings(parts=("memory",), groups=("I3D",), models=("I3D", "Oct-I3D a=0.5"), size=32, frames=4,
                           flops=False)
    result = bm.run(settings)
    assert [r.name for r in result["models"]] == ["I3D", "Oct-I3D a=0.5"]
    saved = {r.name: r.saved_bytes for r in result["models"]}
    assert 0 < saved["Oct-I3D a=0.5"] < saved["I3D"]
    with pytest.raises(ValueError, match="'Oct-C2D a=0.1'.*Oct-I3D a=0.25"):
        bm.run(bm.Settings(parts=("memory",), groups=("I3D",), models=("Oct-C2D a=0.1",)))


def test_benchmark_batch_scales_the_calls_and_drops_the_batch_1_targets():
    from octvideo.utils import benchmark as bm

    def saved(batch):
        settings = bm.Settings(parts=("memory",), groups=("ResNet-50",), size=64, flops=False, batch=batch)
        return bm.run(settings)

    one, two = saved(1), saved(2)
    for r1, r2 in zip(one["models"], two["models"]):
        # every saved activation has the batch axis; only BN's per-channel statistics do not
        assert 1.9 * r1.saved_bytes < r2.saved_bytes <= 2 * r1.saved_bytes
    assert "batch 2," in bm.report(two, markdown=True)
    # The targets (here: the saved-bytes ratio of the I3D group) are evaluated at batch 1 only.
    video = dict(parts=("memory",), groups=("I3D",), size=32, frames=4, flops=False)
    first = bm.run(bm.Settings(**video))
    assert any("saved-for-backward" in t["target"] for t in first["targets"])
    # Under flops=False (--no-flops) the two models whose FLOPs ratio is the a=0.5 target's
    # limit are still counted, the others not.
    gflops = {r.name: r.gflops for r in first["models"]}
    assert gflops["Oct-I3D a=0.5"] < 0.7 * gflops["I3D"] and gflops["Oct-I3D a=0.1"] is None
    assert bm.run(bm.Settings(batch=2, **video))["targets"] == []
    with pytest.raises(ValueError, match="--batch"):
        bm.run(bm.Settings(parts=("memory",), groups=("ResNet-50",), size=64, flops=False, batch=0))


def test_benchmark_targets_give_the_ratio_of_medians_and_the_per_round_spread():
    from octvideo.utils import benchmark as bm

    ref = bm.ModelRow("I3D", "I3D", "i3d", 0.0)
    octr = bm.ModelRow("I3D", "Oct-I3D a=0.1", "i3d", 0.1)
    ref.times[("channels_last", "fp32", "inference")] = [1.0, 2.0, 1.0, 2.0]
    octr.times[("channels_last", "fp32", "inference")] = [0.5, 2.0, 1.5, 4.0]
    (t,) = [t for t in bm.check_targets([ref, octr], []) if t["target"] == "Oct-I3D a=0.1 / I3D inference"]
    assert t["value"] == pytest.approx(1.75 / 1.5, abs=1e-3)  # medians 1.75 and 1.5
    # per-round ratios 0.5, 1, 1.5, 2 -> quartiles 0.875 and 1.625
    assert t["round_ratio_iqr"] == pytest.approx([0.875, 1.625])
    assert t["met"] is False and t["limit"] == 0.93


def test_benchmark_layer_targets_cover_inference_and_training_steps():
    """Each layer case is held to the issue's limits in both modes, and the report counts them."""
    from octvideo.utils import benchmark as bm

    row = bm.LayerRow("res2", "1x1x1", 0.5, 256, 64, 8, 56)
    ms = lambda conv, naive, octc: {"Conv3d": [conv], "OctConv3d a=0": [conv], "naive 4-conv": [naive], "OctConv3d": [octc]}  # noqa: E731
    row.times[("channels_last", "fp32", "inference")] = ms(2.0, 3.0, 1.0)  # 3x faster than naive, 0.5 of Conv3d
    row.times[("channels_last", "fp32", "train")] = ms(10.0, 9.0, 12.0)  # slower than both
    row.times[("channels_last", "bf16", "train")] = ms(10.0, 30.0, 1.0)  # bf16 is not held to the targets
    targets = [t for t in bm.check_targets([], [row]) if t.get("layer")]
    by = {(t["layer"], t["mode"]): t for t in targets}
    assert set(by) == {("naive", "inference"), ("conv3d", "inference"), ("naive", "train"), ("conv3d", "train")}
    assert by["naive", "inference"]["met"] and by["conv3d", "inference"]["met"]
    assert by["naive", "train"]["value"] == pytest.approx(12 / 9, abs=1e-3) and not by["naive", "train"]["met"]
    assert not by["conv3d", "train"]["met"]
    settings = bm.Settings(parts=("layers",), flops=False)
    text = bm.report({"settings": settings, "machine": "m", "models": [], "layers": [], "targets": targets})
    assert "faster than the naive four-conv form (inference): 1 of 1; slower than the naive form: 0." in text
    assert "faster than the naive four-conv form (training step): 0 of 1; slower than the naive form: 1;" in text
    assert "not slower than Conv3d (training step): 0 of 1; missed" in text


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA_ONLY)])
def test_benchmark_layers_part_times_each_octave_path_at_the_batch_and_precision_asked(monkeypatch, device):
    """The layers part runs its cases at --batch clips per call, in each precision, and times
    each octave path's convolution alone beside the layer; the table puts their sum against
    Conv3d and OctConv3d against the sum. Layer targets (batch 1, fp32) are dropped at batch 2."""
    from octvideo.utils import benchmark as bm

    monkeypatch.setattr(bm, "LAYER_STAGES", (("res2", 16, 2, 8),))
    batches = []
    real_inputs = bm._layer_inputs

    def inputs(row, octconv, device, mf, batch=1):
        x, pair = real_inputs(row, octconv, device, mf, batch)
        batches.append((x.shape[0], pair[0].shape[0], pair[1].shape[0]))
        return x, pair

    monkeypatch.setattr(bm, "_layer_inputs", inputs)
    settings = bm.Settings(device=device, parts=("layers",), repeats=3, warmup=1, modes=("inference", "train"),
                           precisions=("fp32", "bf16"), flops=False, batch=2)
    result = bm.run(settings)
    rows = result["layers"]
    assert len(rows) == len(bm.LAYER_KERNELS) * len(bm.LAYER_ALPHAS)
    assert batches and set(batches) == {(2, 2, 2)}
    for r in rows:
        assert set(r.times) == {("channels_last", p, m) for p in ("fp32", "bf16") for m in ("inference", "train")}
        for t in r.times.values():
            assert set(t) == set(bm.LAYER_IMPLS) | set(bm.LAYER_PATHS)
            assert all(len(v) == 3 and all(s > 0 for s in v) for v in t.values())
    assert result["targets"] == []
    tables = bm.layer_tables(rows, settings)
    assert [title for title, _, _ in tables] == [
        f"Single layers, {w}, channels_last, {p}, batch 2:" for p in ("fp32", "bf16")
        for w in ("inference (no grad)", "training step (forward + backward)")]
    title, header, table = tables[0]
    for r, line in zip(rows, table):
        med = {n: bm.median_ms(v) for n, v in r.times[("channels_last", "fp32", "inference")].items()}
        cell = dict(zip(header, line))
        parts, total = cell["paths ms (h2h+h2l+l2h+l2l = sum)"].split(" = ")
        assert [float(v) for v in parts.split("+")] == pytest.approx([med[n] for n in bm.LAYER_PATHS], abs=0.006)
        assert float(total) == pytest.approx(sum(med[n] for n in bm.LAYER_PATHS), abs=0.006)
        assert float(cell["paths / Conv3d"]) == pytest.approx(sum(med[n] for n in bm.LAYER_PATHS) / med["Conv3d"], abs=6e-4)
        assert float(cell["Oct / paths"]) == pytest.approx(med["OctConv3d"] / sum(med[n] for n in bm.LAYER_PATHS), abs=6e-4)
    # On CUDA each implementation's call is also profiled: its device-kernel time, by kind.
    for r in rows:
        if device == "cuda":
            assert set(r.kernels) == set(r.times)
            for k in r.kernels.values():
                assert set(k) == set(bm.LAYER_IMPLS) | set(bm.LAYER_PATHS)
                assert all(total > 0 and sum(kinds.values()) == pytest.approx(total, rel=1e-6)
                           for total, kinds in k.values())
        else:
            assert r.kernels == {}
    kernel_tables = bm.layer_kernel_tables(rows, settings)
    assert len(kernel_tables) == (4 if device == "cuda" else 0)
    # The kernel table's comparisons, on known numbers.
    row = bm.LayerRow("res2", "1x1x1", 0.5, 256, 64, 8, 56)
    row.kernels[("channels_last", "fp32", "inference")] = {
        "Conv3d": (0.4, {"convolution": 0.4}), "OctConv3d a=0": (0.4, {"convolution": 0.4}),
        "naive 4-conv": (0.9, {"convolution": 0.5, "pool": 0.4}),
        "OctConv3d": (0.6, {"convolution": 0.25, "pool": 0.3, "element-wise": 0.05}),
        "h2h": (0.1, {}), "h2l": (0.05, {}), "l2h": (0.05, {}), "l2l": (0.05, {})}
    one_table = bm.layer_kernel_tables([row], bm.Settings(modes=("inference",)))
    ((title, header, (line,)),) = one_table
    cell = dict(zip(header, line))
    assert title == "Single layers, device-kernel ms of one profiled call, inference (no grad), channels_last, fp32, batch 1:"
    assert cell["Oct / Conv3d"] == "1.500" and cell["paths (h2h+h2l+l2h+l2l = sum)"] == "0.100+0.050+0.050+0.050 = 0.250"
    assert cell["paths / Conv3d"] == "0.625" and cell["Oct / paths"] == "2.400"
    assert cell["OctConv3d by kind"] == "pool 0.300, convolution 0.250, element-wise 0.050"
    # At batch 1 the same run is held to the layer targets, fp32 only: two per case and mode.
    one = bm.run(bm.Settings(device=device, parts=("layers",), repeats=1, warmup=0, modes=("inference",),
                             precisions=("fp32", "bf16"), flops=False))
    assert len([t for t in one["targets"] if t.get("layer")]) == 2 * len(one["layers"])


def _load_tool():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "benchmark.py")
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_tool", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def test_benchmark_data_mode_hands_its_arguments_to_the_data_benchmark(monkeypatch):
    calls = []
    fake = types.ModuleType("octvideo.data.benchmark")
    fake.main = lambda args: calls.append(list(args)) or 0
    monkeypatch.setitem(sys.modules, "octvideo.data.benchmark", fake)
    import octvideo.data

    monkeypatch.setattr(octvideo.data, "benchmark", fake, raising=False)
    tool = _load_tool()
    tool.main(["data", "--cfg", "x.yaml", "--num-batches", "3"])
    assert calls == [["--cfg", "x.yaml", "--num-batches", "3"]]
    with pytest.raises(SystemExit):
        tool.main(["--only", "gpu-kernels"])


def test_training_steps_build_no_inference_weight_packs():
    """Pre-packed weights are for inference: a training step (whose h2l forward runs inside an
    autograd Function, with grad mode off) must not pack weights that change every step."""
    import octvideo.layers.octconv as octconv_mod

    conv = OctConv3d(16, 16, (1, 3, 3), padding=(0, 1, 1), alpha_in=0.5, alpha_out=0.5)
    x = make_input(conv, 1, 2, (8, 8), CL3D, dtype=torch.float32)
    weights = {id(p) for p in conv.parameters()}
    packed = lambda: weights & set(octconv_mod._packed_cache)  # noqa: E731
    high, low = conv(tuple(t.clone().requires_grad_() for t in x))
    (high.sum() + low.sum()).backward()
    assert packed() == set()
    with torch.no_grad():
        conv(x)
    assert packed()  # inference packs them
