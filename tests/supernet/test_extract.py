"""The supernet: elastic control, and subnet extraction that keeps the function."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from published import OFA_SUBNET
from torch import nn

from nas.errors import ArchitectureError
from nas.space import get_space
from nas.supernet import OFASupernet, SubNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nets() -> dict[str, OFASupernet]:
    torch.manual_seed(0)
    return {name: OFASupernet(name)
            for name in ("tiny", "cifar_mbv3", "ofa_mbv3", "ofa_proxyless")}


def check_extraction(net: OFASupernet, arch, liven, make_input, seed: int) -> None:
    """The extracted subnet gives the supernet's eval-mode output for ``arch``."""
    net.set_active(arch)
    x = make_input(4, arch.r, seed=seed)
    liven(net, x, seed=seed)
    net.eval()
    with torch.no_grad():
        y = net(x)
        sub = net.extract()
        assert not sub.training
        y_sub = sub(x)
    assert y.std(0).mean() > 0.1, "outputs too small for the comparison to mean anything"
    torch.testing.assert_close(y_sub, y, rtol=1e-5, atol=1e-5)


def test_extraction_keeps_the_function_on_tiny(nets, liven, make_input) -> None:
    space = get_space("tiny")
    archs = [*space.sample_many(25, seed=0), space.largest(), space.smallest()]
    for i, arch in enumerate(archs):
        check_extraction(nets["tiny"], arch, liven, make_input, seed=i)


def test_extraction_keeps_the_function_on_cifar_mbv3(nets, liven, make_input) -> None:
    space = get_space("cifar_mbv3")
    archs = [*space.sample_many(10, seed=1), space.largest(), space.smallest()]
    for i, arch in enumerate(archs):
        check_extraction(nets["cifar_mbv3"], arch, liven, make_input, seed=i)


def test_extraction_keeps_the_function_on_ofa_mbv3(nets, liven, make_input) -> None:
    space = get_space("ofa_mbv3")
    archs = [space.largest(r=128), space.smallest(),
             space.parse({**OFA_SUBNET, "r": 132}),
             *(space.parse({**a.to_dict(), "r": 128}) for a in space.sample_many(2, seed=2))]
    for i, arch in enumerate(archs):
        check_extraction(nets["ofa_mbv3"], arch, liven, make_input, seed=i)


def test_extraction_keeps_the_function_on_ofa_proxyless(nets, liven, make_input) -> None:
    space = get_space("ofa_proxyless")
    archs = [space.largest(r=128), space.smallest(),
             *(space.parse({**a.to_dict(), "r": 128}) for a in space.sample_many(2, seed=3))]
    for i, arch in enumerate(archs):
        check_extraction(nets["ofa_proxyless"], arch, liven, make_input, seed=i)
        sub = nets["ofa_proxyless"].extract(arch)
        assert len(sub.blocks) == 1 + sum(arch.d) + 1  # first block, elastic stages, last
        assert sub.final_expand is None
        assert sub.mix_before_pool
        bns = [m for m in sub.modules() if isinstance(m, nn.BatchNorm2d)]
        assert {m.eps for m in bns} == {1e-3}  # OFA's ProxylessNAS BatchNorm epsilon
        assert {type(m) for m in sub.modules()} >= {nn.ReLU6}
        assert nn.Hardswish not in {
            type(m) for m in sub.modules()}


def _counts(module: nn.Module) -> tuple[int, int]:
    """Parameters and buffer elements of a module."""
    return (sum(p.numel() for p in module.parameters()),
            sum(b.numel() for b in module.buffers() if b.dim() > 0))


def test_ofa_proxyless_has_the_structure_of_ofas_supernet(nets) -> None:
    """Layer by layer the same parameters as the ofa package's OFAProxylessNASNets(w1.3),
    and the same subnets for the same architecture dicts, in both directions."""
    from ofa_reference import ofa_elastic_networks

    ref = ofa_elastic_networks().OFAProxylessNASNets(
        width_mult=1.3, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    net = nets["ofa_proxyless"]
    space = net.space
    assert _counts(net) == _counts(ref)
    assert _counts(net.stem) == _counts(ref.first_conv)
    assert _counts(net.first_block) == _counts(ref.blocks[0])
    assert len(net.blocks) == len(ref.blocks) - 1 == space.n_layers == 21
    for j, (ours, theirs) in enumerate(zip(net.blocks, ref.blocks[1:], strict=True)):
        conv = theirs.conv
        for a, b in ((ours.expand_conv, conv.inverted_bottleneck.conv),
                     (ours.expand_bn, conv.inverted_bottleneck.bn),
                     (ours.depthwise, conv.depth_conv.conv),
                     (ours.depthwise_bn, conv.depth_conv.bn),
                     (ours.project_conv, conv.point_linear.conv),
                     (ours.project_bn, conv.point_linear.bn)):
            assert _counts(a) == _counts(b), j
        assert ours.residual == (theirs.shortcut is not None), j
        assert ours.project_bn.eps == conv.point_linear.bn.bn.eps == 1e-3
    assert _counts(net.feature_mix) == _counts(ref.feature_mix_layer)
    assert _counts(net.classifier) == _counts(ref.classifier)
    assert [len(g) for g in ref.block_group_info] == [4, 4, 4, 4, 4, 1]
    # OFA's own samples (d for all six stages, the last 1) parse, and ours drive OFA's
    # set_active_subnet: the subnets have the same parameters
    random_state = random.getstate()
    random.seed(0)
    try:
        theirs = [ref.sample_active_subnet() for _ in range(3)]
    finally:
        random.setstate(random_state)
    archs = [space.largest(), space.smallest(),
             *(space.parse({**t, "r": 224}) for t in theirs)]
    for arch in archs:
        ref.set_active_subnet(**{k: v for k, v in arch.to_dict().items() if k != "r"})
        sub = ref.get_active_subnet(preserve_weight=False)
        assert _counts(sub)[0] == space.params(arch) == _counts(net.extract(arch))[0]


def test_training_mode_matches_the_extracted_subnet(make_input) -> None:
    """Training the supernet with a subnet active is training that subnet: same logits (batch
    statistics, dropout) and, for the largest, the same gradient."""
    torch.manual_seed(0)
    net = OFASupernet("cifar_mbv3").train()
    space = net.space
    y = torch.arange(8) % 10
    for i, arch in enumerate([space.largest(), space.smallest(), *space.sample_many(2, seed=4)]):
        net.set_active(arch)
        sub = net.extract().train()
        x = make_input(8, arch.r, seed=i)
        torch.manual_seed(i)
        out = net(x)
        torch.manual_seed(i)
        out_sub = sub(x)
        torch.testing.assert_close(out_sub, out, rtol=1e-5, atol=1e-5)
        if i == 0:  # the largest: every weight of the supernet is its own
            net.zero_grad()
            nn.functional.cross_entropy(out, y).backward()
            nn.functional.cross_entropy(out_sub, y).backward()
            norm = sum(float((p.grad**2).sum()) for p in net.parameters() if p.grad is not None)
            norm_sub = sum(float((p.grad**2).sum()) for p in sub.parameters())
            assert norm > 0
            assert norm_sub == pytest.approx(norm, rel=1e-4)


def test_extracting_another_arch_gives_another_function(nets, liven, make_input) -> None:
    net = nets["cifar_mbv3"]
    space = net.space
    a = net.set_active(space.sample(seed=3))
    x = make_input(4, a.r, seed=3)
    liven(net, x, seed=3)
    net.eval()
    b = space.mutate(a, seed=4, prob=0.3, resolution_prob=0.0)
    assert b != a
    with torch.no_grad():
        y = net(x)
        sub_b = net.extract(b)
        assert net.active_arch == a  # extracting another arch does not activate it
        assert not torch.allclose(sub_b(x), y, rtol=1e-3, atol=1e-3)
        net.set_active(b)
        torch.testing.assert_close(sub_b(x), net(x), rtol=1e-5, atol=1e-5)
    assert sub_b.arch == b.to_dict()
    assert sub_b.space == "cifar_mbv3"


def test_extracted_subnet_is_static(nets) -> None:
    net = nets["cifar_mbv3"]
    arch = net.sample_active(seed=5)
    sub = net.extract()
    assert isinstance(sub, SubNet)
    for name, m in sub.named_modules():
        assert not type(m).__name__.startswith("Dynamic"), name
        assert type(m).__module__.startswith(("torch.nn", "nas.supernet._static")), name
    assert len(sub.blocks) == 1 + sum(arch.d)
    md = net.space.max_depth
    slots = [s * md + i for s, depth in enumerate(arch.d) for i in range(depth)]
    for block, j in zip(sub.blocks[1:], slots, strict=True):
        _s, _i, cin, cout, stride, se = net.space.layer_plan[j]
        mid = net.space.mid_channels(cin, arch.e[j])
        conv = block.depthwise[0]
        assert type(conv) is nn.Conv2d
        assert conv.kernel_size == (arch.ks[j], arch.ks[j])
        assert (conv.out_channels, conv.groups, conv.stride) == (mid, mid, (stride, stride))
        assert (block.expand[0].in_channels, block.project[0].out_channels) == (cin, cout)
        assert (block.se is not None) == se
    assert sum(p.numel() for p in sub.parameters()) == net.space.params(arch)
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())


def test_extracted_weights_are_copies(make_input) -> None:
    net = OFASupernet("tiny").eval()
    net.set_active(net.space.sample(seed=6))
    x = make_input(2, 24)
    sub = net.extract()
    with torch.no_grad():
        before = sub(x)
        for p in net.parameters():
            p.mul_(1.1)
        after = sub(x)
    assert torch.equal(before, after)
    supernet_ptrs = {p.data_ptr() for p in net.parameters()}
    assert not supernet_ptrs & {p.data_ptr() for p in sub.parameters()}


def test_deepcopy_and_trace_of_an_extracted_subnet(nets, liven, make_input) -> None:
    net = nets["tiny"]
    arch = net.set_active(net.space.sample(seed=7))
    x = make_input(4, arch.r, seed=7)
    liven(net, x, seed=7)
    sub = net.eval().extract()
    x2 = make_input(4, arch.r, seed=8)
    with torch.no_grad():
        y, y2 = sub(x), sub(x2)
        clone = copy.deepcopy(sub)
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)
        traced = torch.jit.trace(sub, x)
        torch.testing.assert_close(traced(x2), y2, rtol=1e-5, atol=1e-5)
    assert clone.arch == sub.arch == arch.to_dict()


def test_train_and_eval_mode_carry_over(nets, make_input) -> None:
    net = nets["tiny"]
    arch = net.set_active(net.space.sample(seed=9))
    net.train()
    sub = net.extract()
    assert all(m.training for m in sub.modules())
    # in train mode both normalise with batch statistics (tiny has no dropout)
    x = make_input(4, arch.r, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x), rtol=1e-5, atol=1e-5)
    net.eval()
    assert not any(m.training for m in net.extract().modules())


# ---------------------------------------------------------------------------- elastic control
def test_set_active_validates_and_canonicalises(nets) -> None:
    net = nets["ofa_mbv3"]
    arch = net.set_active(OFA_SUBNET)
    assert arch == get_space("ofa_mbv3").parse(OFA_SUBNET)
    assert net.active_arch == arch
    assert len(net.active_blocks()) == sum(OFA_SUBNET["d"])
    for block, (_s, _i, k, e) in zip(net.active_blocks(), arch.active_layers(), strict=True):
        assert (block.active_kernel, block.active_expand) == (k, e)
    with pytest.raises(ArchitectureError, match="kernel size"):
        net.set_active({**OFA_SUBNET, "ks": [4] * 20})
    assert net.active_arch == arch  # a rejected arch changes nothing
    with pytest.raises(ArchitectureError):
        net.set_active(get_space("tiny").largest())
    assert net.set_largest() == net.space.largest()
    assert net.set_smallest() == net.space.smallest()


def test_sample_active_is_seeded(nets) -> None:
    net = nets["cifar_mbv3"]
    a = net.sample_active(seed=11)
    assert a == net.active_arch == net.space.sample(seed=11)
    assert net.sample_active(seed=11) == a
    assert net.sample_active(seed=12) != a


def test_calibrate_random_gives_order_1_outputs(make_input) -> None:
    torch.manual_seed(0)
    net = OFASupernet("cifar_mbv3").eval()
    arch = net.sample_active(seed=13)
    x = torch.randn(4, 3, 32, 32)
    net.set_largest()
    with torch.no_grad():
        before = net(x).abs().mean()
    net.set_active(arch)
    net.calibrate_random(seed=1)
    assert net.active_arch == arch
    assert not net.training
    net.set_largest()
    with torch.no_grad():
        after = net(x).abs().mean()
    assert after > 0.1
    assert after > 10 * before
    # seeded: the same statistics again from the same weights
    twin = copy.deepcopy(net)
    net.calibrate_random(seed=1)
    twin.calibrate_random(seed=1)
    for (name, a), (_, b) in zip(net.named_buffers(), twin.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    bn = net.blocks[0].expand_bn
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
