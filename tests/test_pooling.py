"""Max pooling that keeps less for backward (octvideo/layers/pooling.py), and strided OctConv memory."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.layers import MaxPoolReLU, OctConv3d, max_pool
from octvideo.utils.benchmark import saved_tensor_bytes

CL3D = torch.channels_last_3d

CASES = [
    # shape, kernel, stride, padding, memory format
    ((2, 5, 3, 13, 11), (1, 3, 3), (1, 2, 2), (0, 1, 1), CL3D),  # the 3D stem pool, odd sizes
    ((2, 5, 3, 13, 11), (1, 3, 3), (1, 2, 2), (0, 1, 1), torch.contiguous_format),
    ((2, 4, 9, 10), (3, 3), (2, 2), (1, 1), torch.channels_last),  # the 2D stem pool
    ((1, 3, 5, 6, 6), (2, 1, 1), (2, 1, 1), (0, 0, 0), CL3D),  # the temporal pool, odd T (ceil)
    ((2, 3, 4, 5, 6), (2, 1, 1), (2, 1, 1), (0, 0, 0), torch.contiguous_format),
]


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape,kernel,stride,padding,fmt", CASES)
def test_max_pool_equals_pytorch_relu_then_pool(shape, kernel, stride, padding, fmt, relu):
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    pool = F.max_pool3d if len(shape) == 5 else F.max_pool2d
    y = max_pool(x, kernel, stride, padding, ceil_mode=True, relu=relu)
    ref = pool(F.relu(ref_x) if relu else ref_x, kernel, stride, padding, ceil_mode=True)
    assert torch.equal(y, ref)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=0, atol=0)
    assert x.grad.is_contiguous(memory_format=fmt)
    with torch.no_grad():  # the inference form gives the same numbers, in the input's layout
        y_eval = max_pool(x, kernel, stride, padding, ceil_mode=True, relu=relu)
        assert torch.equal(y_eval, ref)
        assert y_eval.is_contiguous(memory_format=fmt)


def test_stem_pool_keeps_only_int32_indices_and_its_output():
    """PyTorch's ReLU + max pool keep the full-size ReLU output and int64 indices."""
    x0 = torch.randn(1, 8, 2, 16, 16, requires_grad=True)
    x = x0 * 1.0  # a non-leaf, like a BN output
    nbytes, y = saved_tensor_bytes(lambda: MaxPoolReLU((1, 3, 3), (1, 2, 2), (0, 1, 1))(x))
    assert nbytes == y.nbytes + y.numel() * 4
    ref_bytes, _ = saved_tensor_bytes(lambda: nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))(F.relu(x)))
    assert ref_bytes == x.nbytes + y.numel() * 8


def test_temporal_pool_keeps_a_one_byte_mask():
    x = torch.randn(1, 8, 4, 6, 6, requires_grad=True) * 1.0
    nbytes, y = saved_tensor_bytes(lambda: max_pool(x, (2, 1, 1), (2, 1, 1), 0, ceil_mode=True))
    assert y.shape == (1, 8, 2, 6, 6)
    assert nbytes == y.numel()  # PyTorch's keeps x and int64 indices: 12x as much
    x = torch.tensor([1.0, 1.0, 2.0, 5.0]).view(1, 1, 4, 1, 1).requires_grad_()  # a tie goes to the first frame
    max_pool(x, (2, 1, 1), (2, 1, 1), 0, ceil_mode=True).sum().backward()
    assert x.grad.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("alphas", [(0.5, 0.5), (0.0, 0.25), (0.25, 0.0)])
@pytest.mark.parametrize("kernel", [(1, 1, 1), (1, 3, 3)])
def test_strided_octconv_keeps_no_pooled_copy_for_backward(alphas, kernel):
    """A stride-2 OctConv under autograd keeps only its (un-pooled) inputs: the pooled copies
    are recomputed in backward, with the reference's gradients."""
    pad = tuple(k // 2 for k in kernel)
    conv = OctConv3d(16, 24, kernel, (1, 2, 2), pad, alpha_in=alphas[0], alpha_out=alphas[1]).double()
    hi = torch.randn(2, conv.in_high, 3, 10, 9, dtype=torch.float64, requires_grad=True)
    inputs = [hi]
    if conv.in_low:
        inputs.append(torch.randn(2, conv.in_low, 3, 5, 5, dtype=torch.float64, requires_grad=True))
    x = tuple(inputs) if conv.in_low else hi
    params = list(conv.parameters())
    nbytes, out = saved_tensor_bytes(lambda: conv(x), exclude=params)
    assert nbytes == sum(t.nbytes for t in inputs)
    outs = out if isinstance(out, tuple) else (out,)
    grads = [torch.randn_like(o) for o in outs]
    fast = torch.autograd.grad(outs, inputs + params, grads)
    ref_out = conv.forward_reference(hi, inputs[1] if conv.in_low else None)
    ref_outs = ref_out if isinstance(ref_out, tuple) else (ref_out,)
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b)
    ref = torch.autograd.grad(ref_outs, inputs + params, grads)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b)
