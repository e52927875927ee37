"""OctConv3d / OctConv2d: the layer contract users and checkpoints rely on."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.layers import OctBatchNorm, OctConv2d, OctConv3d, make_norm, oct_add, reference_mode


def rand_oct(n, c_high, c_low, t, h, w, dtype=torch.float64):
    high = torch.randn(n, c_high, t, h, w, dtype=dtype)
    if c_low == 0:
        return high
    return high, torch.randn(n, c_low, t, (h + 1) // 2, (w + 1) // 2, dtype=dtype)


@pytest.mark.parametrize("stride,kernel,padding", [(1, 3, 1), ((2, 2, 2), (3, 3, 3), 1), ((1, 2, 2), (1, 3, 3), (0, 1, 1))])
def test_alpha_zero_is_exactly_conv3d(stride, kernel, padding):
    oct_conv = OctConv3d(6, 10, kernel, stride, padding, alpha_in=0, alpha_out=0).double()
    conv = nn.Conv3d(6, 10, kernel, stride, padding, bias=False).double()
    conv.weight.data.copy_(oct_conv.h2h.weight.data)
    x = torch.randn(2, 6, 5, 11, 9, dtype=torch.float64)
    y = oct_conv(x)
    assert isinstance(y, torch.Tensor)
    assert torch.equal(y, conv(x))
    assert list(oct_conv.state_dict()) == ["h2h.weight"]


@pytest.mark.parametrize(
    "alpha_in,alpha_out,groups,expected",
    [
        (0.0, 0.0, 1, ("h2h",)),
        (0.0, 0.5, 1, ("h2h", "h2l")),
        (0.5, 0.0, 1, ("h2h", "l2h")),
        (0.5, 0.5, 1, ("h2h", "h2l", "l2h", "l2l")),
        (0.25, 0.5, 2, ("h2h", "h2l", "l2h", "l2l")),
        (0.5, 0.5, 16, ("h2h", "l2l")),  # depthwise: groups == in == out channels
    ],
)
def test_paths_and_state_dict_keys(alpha_in, alpha_out, groups, expected):
    conv = OctConv3d(16, 16, (3, 3, 3), 1, 1, alpha_in=alpha_in, alpha_out=alpha_out, groups=groups)
    assert conv.paths == expected
    sd = conv.state_dict()
    assert sorted(sd) == sorted(f"{p}.weight" for p in expected)
    in_low, out_low = int(alpha_in * 16), int(alpha_out * 16)
    cin = {"h": 16 - in_low, "l": in_low}
    cout = {"h": 16 - out_low, "l": out_low}
    for p in expected:
        g = cin[p[0]] if groups == 16 else groups
        assert sd[f"{p}.weight"].shape == (cout[p[2]], cin[p[0]] // g, 3, 3, 3)
        assert getattr(conv, p).groups == g


def test_bias_keys():
    conv = OctConv3d(8, 8, 1, alpha_in=0.5, alpha_out=0.5, bias=True)
    assert sorted(conv.state_dict()) == sorted(f"{p}.{w}" for p in ("h2h", "h2l", "l2h", "l2l") for w in ("weight", "bias"))


def independent_octconv(conv, x, stride2):
    """Paper eq. 4 written with F.interpolate / F.avg_pool3d, independent of the layer's helpers."""
    high, low = x if isinstance(x, tuple) else (x, None)
    def pool(t):  # mean of the valid pixels of each 2x2 window (ceil mode); a 1x1 map stays as is
        if t.shape[-2:] == (1, 1):
            return t
        return F.avg_pool3d(t, (1, 2, 2), (1, 2, 2), ceil_mode=True)

    low_in = low  # stride 2: l2h reads the un-pooled low input, already the strided output's size
    if stride2:
        high = pool(high)
        low = pool(low) if low is not None else None
    yh = conv.h2h(high)
    yl = conv.h2l(pool(high)) if conv.h2l is not None else None
    if low is not None:
        if conv.l2l is not None:
            yl = conv.l2l(low) if yl is None else yl + conv.l2l(low)
        if conv.l2h is not None:
            lh = conv.l2h(low_in)
            if lh.shape[-2:] != yh.shape[-2:]:
                lh = F.interpolate(lh, scale_factor=(1, 2, 2), mode="nearest")[..., : yh.shape[-2], : yh.shape[-1]]
            yh = yh + lh
    return yh if yl is None else (yh, yl)


@pytest.mark.parametrize("hw", [(7, 7), (15, 9), (1, 1), (8, 12)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("alphas", [(0.5, 0.5), (0.0, 0.25), (0.25, 0.0), (0.125, 0.75)])
def test_odd_sizes_shapes_and_values(hw, stride, alphas):
    alpha_in, alpha_out = alphas
    conv = OctConv3d(8, 8, (3, 3, 3), (1, stride, stride), (1, 1, 1), alpha_in=alpha_in, alpha_out=alpha_out).double()
    x = rand_oct(2, 8 - int(alpha_in * 8), int(alpha_in * 8), 3, *hw)
    y = conv(x)
    h_out = (hw[0] + 1) // 2 if stride == 2 else hw[0]
    w_out = (hw[1] + 1) // 2 if stride == 2 else hw[1]
    high = y[0] if isinstance(y, tuple) else y
    assert high.shape == (2, 8 - int(alpha_out * 8), 3, h_out, w_out)
    if alpha_out > 0:
        assert y[1].shape == (2, int(alpha_out * 8), 3, (h_out + 1) // 2, (w_out + 1) // 2)
    ref = independent_octconv(conv, x, stride == 2)
    for a, b in zip(y if isinstance(y, tuple) else (y,), ref if isinstance(ref, tuple) else (ref,)):
        torch.testing.assert_close(a, b)


def test_temporal_kernel_and_stride_apply_to_every_path():
    conv = OctConv3d(8, 8, (3, 1, 1), (2, 1, 1), (1, 0, 0), alpha_in=0.5, alpha_out=0.5)
    y = conv(rand_oct(1, 4, 4, 8, 6, 6, torch.float32))
    assert y[0].shape[2] == 4 and y[1].shape[2] == 4  # time halved by the stride only, never by the octave


def test_group_octconv_equals_per_group_convs():
    """Group OctConv applies the groups on every path: with alpha 0.5 on both sides, each group of
    channels sees only its own group, so zeroing group 1's inputs leaves group 0's outputs unchanged."""
    conv = OctConv3d(8, 8, 1, alpha_in=0.5, alpha_out=0.5, groups=2).double()
    x = rand_oct(1, 4, 4, 2, 6, 6)
    y = conv(x)
    x2 = (x[0].clone(), x[1].clone())
    x2[0][:, 2:] = 0
    x2[1][:, 2:] = 0
    y2 = conv(x2)
    torch.testing.assert_close(y[0][:, :2], y2[0][:, :2])
    torch.testing.assert_close(y[1][:, :2], y2[1][:, :2])
    assert not torch.allclose(y[0][:, 2:], y2[0][:, 2:])


def test_depthwise_has_no_cross_frequency_paths():
    conv = OctConv3d(8, 8, (1, 3, 3), 1, (0, 1, 1), alpha_in=0.5, alpha_out=0.5, groups=8).double()
    x = rand_oct(1, 4, 4, 2, 6, 6)
    y = conv(x)
    torch.testing.assert_close(y[0], conv.h2h(x[0]))
    torch.testing.assert_close(y[1], conv.l2l(x[1]))


def test_octconv2d_matches_3d_with_one_frame():
    c3 = OctConv3d(8, 12, (1, 3, 3), (1, 2, 2), (0, 1, 1), alpha_in=0.5, alpha_out=0.25).double()
    c2 = OctConv2d(8, 12, 3, 2, 1, alpha_in=0.5, alpha_out=0.25).double()
    for p in c3.paths:
        getattr(c2, p).weight.data.copy_(getattr(c3, p).weight.data[:, :, 0])
    x3 = rand_oct(2, 4, 4, 1, 9, 7)
    y3 = c3(x3)
    y2 = c2((x3[0][:, :, 0], x3[1][:, :, 0]))
    torch.testing.assert_close(y2[0], y3[0][:, :, 0])
    torch.testing.assert_close(y2[1], y3[1][:, :, 0])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(alpha_in=1.0), "alpha_in"),
        (dict(alpha_out=-0.1), "alpha_out"),
        (dict(alpha_out=1.5), "1.5"),
        (dict(alpha_in=0.1, in_channels=4), "alpha_in=0.1"),  # int(0.4) = 0: empty low branch
        (dict(groups=3), "groups=3"),
        (dict(stride=(1, 3, 3)), "stride"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, message):
    args = dict(in_channels=8, out_channels=8, kernel_size=1, alpha_in=0.5, alpha_out=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        OctConv3d(**args)


def test_bad_inputs_raise_value_error():
    conv = OctConv3d(8, 8, 1, alpha_in=0.5, alpha_out=0.5)
    high = torch.randn(1, 4, 2, 8, 8)
    with pytest.raises(ValueError, match=r"does not match"):
        conv((high, torch.randn(1, 4, 2, 8, 8)))  # low at full size: would silently broadcast elsewhere
    with pytest.raises(ValueError, match=r"channels; expected 4"):
        conv((torch.randn(1, 5, 2, 8, 8), torch.randn(1, 4, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"tuple"):
        conv(high)
    with pytest.raises(ValueError, match=r"rank 5"):
        conv((torch.randn(4, 8, 8), torch.randn(4, 4, 4)))
    plain_in = OctConv3d(8, 8, 1, alpha_in=0, alpha_out=0.5)
    with pytest.raises(ValueError, match=r"expects a Tensor"):
        plain_in((high, high))


def test_octave_helpers():
    bn = OctBatchNorm(8, 0.25)
    assert sorted(k.split(".")[0] for k in bn.state_dict()) == ["h"] * 5 + ["l"] * 5
    assert bn.h.num_features == 6 and bn.l.num_features == 2
    assert isinstance(make_norm(8, 0.0), nn.BatchNorm3d)
    a = (torch.ones(1, 2, 1, 2, 2), torch.ones(1, 1, 1, 1, 1))
    s = oct_add(a, a)
    assert s[0].sum() == 16 and s[1].sum() == 2
    with pytest.raises(ValueError, match="shortcut"):
        oct_add(a, torch.ones(1, 2, 1, 2, 2))


@pytest.mark.parametrize("dims,affine", [(3, True), (2, True), (3, False)])
def test_octave_batch_norm_eval_equals_one_batch_norm_per_branch(dims, affine):
    bn = OctBatchNorm(12, 0.25, dims=dims, affine=affine).double()
    shape = (2, 4, 6, 6)[: dims + 1]
    x = (torch.randn(2, 9, *shape[1:], dtype=torch.float64), torch.randn(2, 3, *shape[1:-2], 3, 3, dtype=torch.float64))
    bn.train()
    bn(x)  # running statistics move away from their initial values
    bn(tuple(t * 3 + 1 for t in x))
    if affine:
        with torch.no_grad():
            for b in (bn.h, bn.l):
                b.weight.uniform_(0.5, 2)
                b.bias.uniform_(-1, 1)
    bn.eval()
    got = bn(x)
    torch.testing.assert_close(got[0], bn.h(x[0]), rtol=0, atol=0)
    torch.testing.assert_close(got[1], bn.l(x[1]), rtol=0, atol=0)
    mean, var = bn.l.running_mean, bn.l.running_var
    expected = (x[1] - mean.view(-1, *[1] * dims)) / torch.sqrt(var.view(-1, *[1] * dims) + bn.l.eps)
    if affine:
        expected = expected * bn.l.weight.view(-1, *[1] * dims) + bn.l.bias.view(-1, *[1] * dims)
    torch.testing.assert_close(got[1], expected)
    # A hook on a branch still runs; a wrong rank still gets BatchNorm's own error.
    seen = []
    bn.h.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    bn(x)
    assert seen == [x[0].shape]
    with pytest.raises(ValueError, match="expected"):
        bn((x[0][0], x[1][0]))


@pytest.mark.parametrize("dims,affine", [(3, True), (2, True), (3, False)])
def test_matrix_batch_norm_equals_batch_norm_in_training(dims, affine):
    # The CUDA route for unaligned widths (octave._MatrixBatchNorm) must be nn.BatchNorm's
    # training step exactly: output and its layout, running statistics, the batch counter and
    # every gradient, with the models' in-place ReLU after it.
    from octvideo.layers.octave import matrix_batch_norm

    bn_cls = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    ref, bn = (bn_cls(7, affine=affine).double() for _ in range(2))
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2)
            ref.bias.uniform_(-1, 1)
    bn.load_state_dict(ref.state_dict())
    shape = (3, 7, 4, 5, 6) if dims == 3 else (3, 7, 5, 6)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).contiguous(memory_format=fmt)
    g = torch.randn(x.shape, dtype=torch.float64)  # contiguous: the backward must take any layout
    outs, grads = [], []
    for module, fn in ((ref, lambda m, t: m(t)), (bn, matrix_batch_norm)):
        xi = x.clone().requires_grad_()
        for _ in range(2):  # two steps: the running statistics compound
            y = torch.relu_(fn(module, xi))
        y.backward(g)
        outs.append(y)
        grads.append([xi.grad] + ([module.weight.grad, module.bias.grad] if affine else []))
    assert outs[1].is_contiguous(memory_format=fmt)
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[key], value, msg=key)
    assert int(bn.num_batches_tracked) == 2


def test_reference_mode_gives_same_result():
    conv = OctConv3d(8, 8, (1, 3, 3), 1, (0, 1, 1), alpha_in=0.5, alpha_out=0.5).double()
    x = rand_oct(1, 4, 4, 2, 7, 5)
    y = conv(x)
    with reference_mode():
        r = conv(x)
    torch.testing.assert_close(y[0], r[0])
    torch.testing.assert_close(y[1], r[1])
