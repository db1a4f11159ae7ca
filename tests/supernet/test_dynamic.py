"""Elastic modules: kernel transformation (following every weight update), BN, reordering."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.space import get_space
from nas.supernet import (
    DynamicBatchNorm2d,
    DynamicLinear,
    DynamicMBConv,
    DynamicPointwiseConv2d,
    DynamicSeparableConv2d,
    OFASupernet,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def depthwise(x: torch.Tensor, w: torch.Tensor, stride: int = 1) -> torch.Tensor:
    c, k = x.shape[1], w.shape[-1]
    return F.conv2d(x, w[:c], None, stride, k // 2, 1, c)


def sep_conv(seed: int = 0, channels: int = 6, stride: int = 1) -> DynamicSeparableConv2d:
    torch.manual_seed(seed)
    return DynamicSeparableConv2d(channels, [3, 5, 7], stride)


def perturb_transforms(m: nn.Module, scale: float = 0.2, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("transform_"):
                p.add_(scale * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------------------- kernel transform
def test_transform_matrices_are_ofas() -> None:
    m = sep_conv()
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters() if n.startswith("transform_")}
    assert shapes == {"transform_7to5": (25, 25), "transform_5to3": (9, 9)}
    assert torch.equal(m.transform_7to5, torch.eye(25))


@pytest.mark.parametrize("stride", [1, 2])
def test_identity_transforms_give_the_centre_crop(stride: int) -> None:
    m = sep_conv(stride=stride)
    w = m.weight.detach()
    assert torch.equal(m.kernel(7), w)
    assert torch.equal(m.kernel(5), w[:, :, 1:6, 1:6])
    assert torch.equal(m.kernel(3), w[:, :, 2:5, 2:5])
    x = torch.randn(2, 4, 9, 9)  # 4 of the 6 channels active
    for k, crop in ((7, w), (5, w[:, :, 1:6, 1:6]), (3, w[:, :, 2:5, 2:5])):
        expected = depthwise(x, crop, stride)
        torch.testing.assert_close(m(x, k), expected, rtol=1e-6, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(m.eval()(x, k), expected, rtol=1e-6, atol=1e-6)
        m.train()
        assert m(x, k).shape == (2, 4, (9 - 1) // stride + 1, (9 - 1) // stride + 1)


def test_perturbed_transforms_change_the_small_kernels_in_a_nested_way() -> None:
    m = sep_conv()
    w = m.weight.detach()
    crop5, crop3 = w[:, :, 1:6, 1:6], w[:, :, 2:5, 2:5]
    with torch.no_grad():
        m.transform_5to3.add_(0.2 * torch.randn(9, 9))
    assert torch.equal(m.kernel(5), crop5)  # the 5x5 kernel does not use the 5->3 matrix
    assert not torch.allclose(m.kernel(3), crop3, atol=1e-3)
    k3_before = m.kernel(3).detach().clone()
    with torch.no_grad():
        m.transform_7to5.add_(0.2 * torch.randn(25, 25))
    assert not torch.allclose(m.kernel(5), crop5, atol=1e-3)
    # the 3x3 kernel is made from the transformed 5x5 one (7 -> 5 -> 3)
    assert not torch.allclose(m.kernel(3), k3_before, atol=1e-3)
    x = torch.randn(2, 6, 8, 8)
    assert not torch.allclose(m(x, 3), depthwise(x, crop3), atol=1e-3)
    torch.testing.assert_close(m(x, 3), depthwise(x, m.kernel(3)))


def test_gradients_reach_the_transform_matrices() -> None:
    m = sep_conv()
    perturb_transforms(m)
    m(torch.randn(2, 6, 8, 8), 3).square().sum().backward()
    assert m.transform_5to3.grad is not None
    assert m.transform_5to3.grad.abs().sum() > 0
    assert m.transform_7to5.grad is not None
    assert m.transform_7to5.grad.abs().sum() > 0
    assert m.weight.grad is not None
    assert m.weight.grad[:, :, 0].abs().sum() == 0  # outer ring unused by a 3x3 kernel...
    assert m.weight.grad[:, :, 1].abs().sum() > 0  # ...the 5x5 ring is, through 7->5


def test_extract_is_a_plain_depthwise_conv() -> None:
    m = sep_conv(stride=2)
    perturb_transforms(m)
    x = torch.randn(2, 4, 9, 9)
    for k in (3, 5, 7):
        conv = m.extract(4, k)
        assert type(conv) is nn.Conv2d
        assert conv.groups == 4
        assert conv.kernel_size == (k, k)
        with torch.no_grad():
            torch.testing.assert_close(conv(x), m(x, k), rtol=1e-5, atol=1e-6)


# ------------------------------------------------ small kernels follow weight updates
def _eval_out(m: DynamicSeparableConv2d, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    m.eval()
    with torch.no_grad():
        return m(x, k)


def _fresh(m: DynamicSeparableConv2d, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return depthwise(x, m.kernel(k))


def test_cache_follows_load_state_dict() -> None:
    m, other = sep_conv(0), sep_conv(1)
    perturb_transforms(m, seed=2)
    perturb_transforms(other, seed=3)
    x = torch.randn(2, 6, 8, 8)
    before = _eval_out(m, x)
    m.load_state_dict(other.state_dict())
    after = _eval_out(m, x)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, _fresh(other, x))


@pytest.mark.parametrize("which", ["weight", "transform_7to5", "transform_5to3"])
def test_cache_follows_in_place_updates(which: str) -> None:
    m = sep_conv()
    perturb_transforms(m)
    x = torch.randn(2, 6, 8, 8)
    before = _eval_out(m, x)
    with torch.no_grad():
        getattr(m, which).mul_(1.5)
    after = _eval_out(m, x)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, _fresh(m, x))


@pytest.mark.parametrize("opt", [torch.optim.SGD, torch.optim.Adam])
def test_cache_follows_an_optimizer_step(opt) -> None:
    m = sep_conv()
    x = torch.randn(2, 6, 8, 8)
    before = _eval_out(m, x)
    m.train()
    optimizer = opt(m.parameters(), lr=0.1)
    m(x, 3).square().sum().backward()
    optimizer.step()
    after = _eval_out(m, x)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, _fresh(m, x))


def test_cache_follows_dtype_changes() -> None:
    m = sep_conv()
    perturb_transforms(m)
    x = torch.randn(2, 6, 8, 8)
    _eval_out(m, x)
    m.double()
    out = _eval_out(m, x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _fresh(m, x.double()))


def test_cache_follows_updates_through_data() -> None:
    m = sep_conv()
    x = torch.randn(2, 6, 8, 8)
    _eval_out(m, x)
    m.transform_5to3.data.add_(0.3 * torch.randn(9, 9))
    torch.testing.assert_close(_eval_out(m, x), _fresh(m, x))


def test_cache_follows_load_state_dict_with_assign() -> None:
    m, other = sep_conv(0), sep_conv(1)  # same construction: same version counters
    x = torch.randn(2, 6, 8, 8)
    _eval_out(m, x)
    m.load_state_dict(other.state_dict(), assign=True)
    torch.testing.assert_close(_eval_out(m, x), _fresh(other, x))


# ---------------------------------------------------------------------------- BatchNorm
def _bn(seed: int = 0) -> DynamicBatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = DynamicBatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(8, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(8, generator=gen))
        bn.weight.copy_(0.5 + torch.rand(8, generator=gen))
        bn.bias.copy_(torch.randn(8, generator=gen))
    return bn


def test_batchnorm_train_mode_updates_only_the_active_slice() -> None:
    bn = _bn()
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    w0, b0 = bn.weight.detach().clone(), bn.bias.detach().clone()
    x = 3 + 2 * torch.randn(16, 5, 4, 4)
    y = bn.train()(x)
    # the 5 active channels move towards the batch statistics...
    batch_mean = x.mean((0, 2, 3))
    batch_var = x.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean[:5], 0.9 * mean0[:5] + 0.1 * batch_mean)
    torch.testing.assert_close(bn.running_var[:5], 0.9 * var0[:5] + 0.1 * batch_var)
    # ...the 3 others keep theirs
    assert torch.equal(bn.running_mean[5:], mean0[5:])
    assert torch.equal(bn.running_var[5:], var0[5:])
    assert torch.equal(bn.weight, w0)
    assert torch.equal(bn.bias, b0)
    assert int(bn.num_batches_tracked) == 1
    # and the output is normalised with the batch statistics
    expected = F.batch_norm(x, None, None, w0[:5], b0[:5], True, 0.0, bn.eps)
    torch.testing.assert_close(y, expected)


def test_batchnorm_eval_mode_uses_the_running_slice() -> None:
    bn = _bn().eval()
    x = torch.randn(4, 5, 3, 3)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    y = bn(x)
    expected = (x - mean[None, :5, None, None]) / (var[None, :5, None, None] + bn.eps).sqrt()
    expected = expected * bn.weight[None, :5, None, None] + bn.bias[None, :5, None, None]
    torch.testing.assert_close(y, expected)
    assert torch.equal(bn.running_mean, mean)
    ref = bn.extract(5).eval()
    assert type(ref) is nn.BatchNorm2d
    assert ref.num_features == 5
    torch.testing.assert_close(ref(x), y)


def test_batchnorm_full_width_is_plain_batchnorm() -> None:
    bn, ref = _bn(), nn.BatchNorm2d(8)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(4, 8, 3, 3)
    torch.testing.assert_close(bn.train()(x), ref.train()(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)
    torch.testing.assert_close(bn.eval()(x), ref.eval()(x))


# ---------------------------------------------------------------------------- other slices
def test_pointwise_and_linear_slices() -> None:
    torch.manual_seed(0)
    pw = DynamicPointwiseConv2d(8, 12, bias=True)
    with torch.no_grad():
        pw.bias.normal_()
    x = torch.randn(2, 5, 3, 3)
    conv = pw.extract(5, 7)
    assert (conv.in_channels, conv.out_channels) == (5, 7)
    with torch.no_grad():
        torch.testing.assert_close(pw(x, 7), conv(x))
        torch.testing.assert_close(pw(x, 7), F.conv2d(x, pw.weight[:7, :5], pw.bias[:7]))
    lin = DynamicLinear(16, 4)
    z = torch.randn(3, 10)
    with torch.no_grad():
        torch.testing.assert_close(lin(z), lin.extract(10)(z))
        torch.testing.assert_close(lin(z), z @ lin.weight[:, :10].T + lin.bias)


def test_mbconv_blocks_follow_the_space() -> None:
    space = get_space("ofa_mbv3")
    net = OFASupernet(space)
    assert len(net.blocks) == space.n_layers
    for block, (_s, _i, cin, cout, stride, se) in zip(net.blocks, space.layer_plan, strict=True):
        assert isinstance(block, DynamicMBConv)
        assert (block.cin, block.cout, block.stride) == (cin, cout, stride)
        assert (block.se is not None) == se
        assert block.mid_of == {e: space.mid_channels(cin, e) for e in space.expand_ratios}
        assert block.residual == (stride == 1 and cin == cout)


# ---------------------------------------------------------------------------- reordering
@pytest.fixture
def lively_tiny(liven, make_input):
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.set_largest()
    x = make_input(8, 24, seed=1)
    liven(net, x, seed=2)
    return net.eval(), x


def _out(net: OFASupernet, arch, x: torch.Tensor) -> torch.Tensor:
    net.set_active(arch)
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("expand_stage", [0, 1])
def test_reorder_keeps_the_largest_subnet_and_changes_smaller_ones(
    lively_tiny, expand_stage: int
) -> None:
    net, x = lively_tiny
    space = net.space
    big = space.largest()
    narrow = space.arch(big.ks, [min(space.expand_ratios)] * space.n_layers, big.d, big.r)
    small_k = space.arch([3] * space.n_layers, big.e, big.d, big.r)
    y_big, y_narrow, y_small_k = (_out(net, a, x) for a in (big, narrow, small_k))
    assert y_big.std(0).mean() > 0.1
    net.reorder_channels(expand_stage)
    torch.testing.assert_close(_out(net, big, x), y_big, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_out(net, small_k, x), y_small_k, rtol=1e-5, atol=1e-5)
    if expand_stage == 0:  # (with 1, tiny's two widths are nested groups already)
        assert not torch.allclose(_out(net, narrow, x), y_narrow, rtol=1e-3, atol=1e-3)
    # the (cached) small-kernel path still agrees with a fresh extraction after reordering
    net.set_active(space.arch([3] * space.n_layers, narrow.e, big.d, big.r))
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.extract()(x), rtol=1e-5, atol=1e-5)


def test_reorder_puts_the_important_channels_first(lively_tiny) -> None:
    net, _ = lively_tiny
    net.reorder_channels()
    for block in net.blocks:
        importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])
        if block.se is not None:
            se_imp = block.se.expand.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(se_imp[:-1] >= se_imp[1:])


def test_reorder_with_expand_stage_keeps_nested_groups(lively_tiny) -> None:
    net, _ = lively_tiny
    block = net.blocks[0]
    widths = sorted(block.mid_of.values())  # tiny: expand 2 and 4
    with torch.no_grad():  # make the channels outside the small group the important ones
        block.project_conv.weight[:, : widths[0]] *= 0.01
    outer = block.project_conv.weight[:, widths[0] :].clone()
    net.reorder_channels(expand_stage=1)
    # the channels of the smaller expand ratio stay those of the smaller expand ratio
    kept = block.project_conv.weight[:, widths[0] :]
    assert torch.equal(torch.sort(kept.flatten()).values, torch.sort(outer.flatten()).values)
