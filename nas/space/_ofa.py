"""Once-for-All's specialized subnets (``net.config`` + ``run.config``) as architectures.

OFA publishes 50 subnets it specialized for devices (``han-cai/files``, folder
``ofa/ofa_specialized/<name>/``, MIT licence with OFA's code) as full network configs: OFA's
``MobileNetV3`` or ``ProxylessNASNets`` JSON (every block with its kernel, expand ratio,
channels, stride, activation and squeeze-excite) and ``run.config`` with the ``image_size``
it was fine-tuned at. :func:`arch_from_ofa_config` reads such a config back into
``{ks, e, d, r}`` of the space whose network it is (``ofa_mbv3``: stem 16, final expand 960;
``ofa_mbv3_w12``: stem 24, 1152; ``ofa_proxyless``: stem 40, feature mix 1664, the
ProxylessNAS space at width 1.3), checking every block against the space. The resolution is a
deployment choice: one off the space's search grid is kept (``parse(off_grid=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas._io import read_text
from nas.errors import ArchitectureError
from nas.space._arch import Architecture
from nas.space._registry import get_space, list_spaces
from nas.space._space import SearchSpace

__all__ = ["arch_from_ofa_config", "read_ofa_subnet"]


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ArchitectureError(f"{where}: missing field {key!r}")
    return obj[key]


def _int(obj: Any, key: str, where: str) -> int:
    v = _get(obj, key, where)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ArchitectureError(f"{where}: {key} = {v!r}: must be an int")
    return v


def _space_of(cfg: dict[str, Any], where: str) -> SearchSpace:
    """The ImageNet space of OFA's layout ``cfg["name"]`` with the config's stem and head
    widths."""
    proxyless = cfg["name"] == "ProxylessNASNets"
    head_layer = "feature_mix_layer" if proxyless else "final_expand_layer"
    stem = _int(_get(cfg, "first_conv", where), "out_channels", f"{where} first_conv")
    head = _int(_get(cfg, head_layer, where), "out_channels", f"{where} {head_layer}")
    known: list[tuple[str, int, int]] = []
    for name in list_spaces():
        sp = get_space(name)
        if sp.family != "ofa":
            continue
        h = sp.spec.head
        if sp.spec.num_classes != 1000 or h.feature_mix_before_pool != proxyless:
            continue
        width = h.feature_mix if proxyless else h.final_expand
        assert width is not None
        known.append((name, sp.spec.stem.channels, width))
        if (sp.spec.stem.channels, width) == (stem, head):
            return sp
    if proxyless and len(known) == 1:  # name the field that differs
        name, want_stem, want_head = known[0]
        field, got, want = (("first_conv", stem, want_stem) if stem != want_stem
                            else (head_layer, head, want_head))
        raise ArchitectureError(f"{where}: {field}.out_channels = {got}: space {name} (OFA's "
                                f"ProxylessNAS at width 1.3) has {want}; other widths are not "
                                "supported")
    spaces = "; ".join(f"{n}: {a}/{b}" for n, a, b in known)
    raise ArchitectureError(f"{where}: first_conv.out_channels/{head_layer}.out_channels "
                            f"= {stem}/{head}: matches no space ({spaces})")


def arch_from_ofa_config(net_config: dict[str, Any], image_size: Any,
                         where: str = "net.config") -> Architecture:
    """The architecture of an OFA ``MobileNetV3`` or ``ProxylessNASNets`` network config at
    ``image_size``.

    Raises:
        ArchitectureError: one line naming the field: a network of no registered space (a
            ProxylessNAS width other than 1.3, say), or a block the space cannot hold.
    """
    name = _get(net_config, "name", where)
    if name not in ("MobileNetV3", "ProxylessNASNets"):
        raise ArchitectureError(f"{where}: name = {name!r}: must be 'MobileNetV3' or "
                                "'ProxylessNASNets'")
    sp = _space_of(net_config, where)
    spec = sp.spec
    convs = _block_convs(net_config, where)
    first = convs[0]
    if _int(first, "out_channels", f"{where} blocks[0]") != spec.first_block.channels:
        raise ArchitectureError(f"{where}: blocks[0].out_channels = {first['out_channels']}: "
                                f"space {sp.name}'s first block has {spec.first_block.channels}")
    ks = [sp.kernel_sizes[0]] * sp.n_layers
    e = [sp.expand_ratios[0]] * sp.n_layers
    d = []
    j = 1
    cin = spec.first_block.channels
    for s, st in enumerate(spec.stages):
        allowed, most = ((st.depth,), st.depth) if st.depth else (sp.depths, sp.max_depth)
        depth = 0
        while j < len(convs) and convs[j].get("out_channels") == st.channels:
            at, cin_b = f"{where} blocks[{j}]", cin if depth == 0 else st.channels
            k = _block_kernel(sp, s, cin_b, depth == 0, convs[j], at)
            if depth >= most:
                raise ArchitectureError(f"{at}: stage {s + 1} has more than {most} blocks")
            x = _block_expand(sp, cin_b, k, convs[j], at)
            ks[s * sp.max_depth + depth], e[s * sp.max_depth + depth] = k, x
            depth += 1
            j += 1
        if depth not in allowed:
            raise ArchitectureError(f"{where}: stage {s + 1} ({st.channels} channels) has "
                                    f"{depth} blocks: must be one of {list(allowed)}")
        if st.depth is None:  # a fixed-depth stage has no entry in d
            d.append(depth)
        cin = st.channels
    if j != len(convs):
        raise ArchitectureError(f"{where}: blocks[{j}].out_channels = "
                                f"{convs[j].get('out_channels')}: not a stage of space {sp.name}")
    return sp.parse({"ks": ks, "e": e, "d": d, "r": _resolution(image_size)}, off_grid=True)


def _block_convs(net_config: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The inverted-residual convolution of each block (``mobile_inverted_conv`` in OFA's
    older configs, ``conv`` in newer ones)."""
    blocks = _get(net_config, "blocks", where)
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise ArchitectureError(f"{where}: blocks must be a list of blocks")
    convs = []
    for i, b in enumerate(blocks):
        conv = b.get("mobile_inverted_conv", b.get("conv")) if isinstance(b, dict) else None
        if not isinstance(conv, dict):
            raise ArchitectureError(f"{where}: blocks[{i}] has no mobile_inverted_conv")
        convs.append(conv)
    return convs


def _block_kernel(sp: SearchSpace, s: int, cin: int, first: bool, c: dict[str, Any],
                  at: str) -> int:
    """The kernel size of block ``c`` of stage ``s`` (``first`` in it, taking ``cin``
    channels), once the fields the stage fixes are checked against the space."""
    st = sp.spec.stages[s]
    for key, want in (("in_channels", cin), ("stride", st.stride if first else 1)):
        if _int(c, key, at) != want:
            raise ArchitectureError(f"{at}: {key} = {c[key]}: stage {s + 1} of space "
                                    f"{sp.name} has {want}")
    if bool(c.get("use_se")) != st.se or c.get("act_func") != st.act:
        raise ArchitectureError(
            f"{at}: act_func/use_se = {c.get('act_func')}/{c.get('use_se')}: stage "
            f"{s + 1} of space {sp.name} has {st.act}/{st.se}")
    return _int(c, "kernel_size", at)


def _block_expand(sp: SearchSpace, cin: int, k: int, c: dict[str, Any], at: str) -> Any:
    """The expand ratio of block ``c`` (taking ``cin`` channels, kernel size ``k``), with
    both choices and its middle width checked against the space."""
    x = c.get("expand_ratio")
    if k not in sp.kernel_sizes:
        raise ArchitectureError(f"{at}: kernel_size = {k}: must be one of "
                                f"{list(sp.kernel_sizes)}")
    if x not in sp.expand_ratios or isinstance(x, bool):
        raise ArchitectureError(f"{at}: expand_ratio = {x!r}: must be one of "
                                f"{list(sp.expand_ratios)}")
    mid = c.get("mid_channels")
    if mid is not None and mid != sp.mid_channels(cin, x):
        raise ArchitectureError(f"{at}: mid_channels = {mid}: space {sp.name} has "
                                f"{sp.mid_channels(cin, x)} for expand ratio {x}")
    return x


def _resolution(image_size: Any) -> Any:
    """The resolution of ``run.config``'s ``image_size`` (a size, or a list of one size)."""
    if isinstance(image_size, list) and len(set(image_size)) > 1:
        raise ArchitectureError(f"run.config: image_size = {image_size}: one size expected")
    return image_size[0] if isinstance(image_size, list) and image_size else image_size


def read_ofa_subnet(path: Path | str) -> Architecture:
    """The architecture of a published OFA subnet: a folder with ``net.config`` and
    ``run.config`` (or the ``net.config`` file, ``run.config`` beside it).

    Raises:
        ArchitectureError: a missing or unreadable file, or a config that does not convert.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    net = path / "net.config" if path.is_dir() else path
    run = folder / "run.config"
    cfgs = []
    for p in (net, run):
        try:
            cfgs.append(json.loads(read_text(p, "OFA config", error=ArchitectureError)))
        except ValueError as exc:
            raise ArchitectureError(f"OFA config {p} is not valid JSON ({exc})") from None
    return arch_from_ofa_config(cfgs[0], _get(cfgs[1], "image_size", str(run)), str(net))
