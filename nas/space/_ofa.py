"""Once-for-All's specialized subnets (``net.config`` + ``run.config``) as architectures.

OFA publishes 50 subnets it specialized for devices (``han-cai/files``, folder
``ofa/ofa_specialized/<name>/``, MIT licence with OFA's code) as full network configs: OFA's
``MobileNetV3`` JSON (every block with its kernel, expand ratio, channels, stride,
activation and squeeze-excite) and ``run.config`` with the ``image_size`` it was fine-tuned at.
:func:`arch_from_ofa_config` reads such a config back into ``{ks, e, d, r}`` of the space whose
network it is (``ofa_mbv3``: stem 16, final expand 960; ``ofa_mbv3_w12``: stem 24, 1152),
checking every block against the space. The resolution is a deployment choice: one off the
space's search grid is kept (``parse(off_grid=True)``). ProxylessNAS configs (OFA's third
supernet) are refused: that space is not supported yet.
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
    stem = _int(_get(cfg, "first_conv", where), "out_channels", f"{where} first_conv")
    head = _int(_get(cfg, "final_expand_layer", where), "out_channels",
                f"{where} final_expand_layer")
    known = []
    for name in list_spaces():
        sp = get_space(name)
        if sp.n_stages == 5 and sp.spec.num_classes == 1000:
            known.append(f"{name}: {sp.spec.stem.channels}/{sp.spec.head.final_expand}")
            if (sp.spec.stem.channels, sp.spec.head.final_expand) == (stem, head):
                return sp
    raise ArchitectureError(f"{where}: first_conv.out_channels/final_expand_layer.out_channels "
                            f"= {stem}/{head}: matches no space ({'; '.join(known)})")


def arch_from_ofa_config(net_config: dict[str, Any], image_size: Any,
                         where: str = "net.config") -> Architecture:
    """The architecture of an OFA ``MobileNetV3`` network config at ``image_size``.

    Raises:
        ArchitectureError: one line naming the field: a ProxylessNAS config (not supported
            yet), a network of no registered space, or a block the space cannot hold.
    """
    name = _get(net_config, "name", where)
    if name == "ProxylessNASNets":
        raise ArchitectureError(f"{where}: name = 'ProxylessNASNets': OFA's ProxylessNAS space "
                                "(ofa_proxyless) is not supported yet; MobileNetV3 configs are")
    if name != "MobileNetV3":
        raise ArchitectureError(f"{where}: name = {name!r}: must be 'MobileNetV3'")
    sp = _space_of(net_config, where)
    spec = sp.spec
    blocks = _get(net_config, "blocks", where)
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise ArchitectureError(f"{where}: blocks must be a list of blocks")
    convs = []
    for i, b in enumerate(blocks):
        conv = b.get("mobile_inverted_conv", b.get("conv")) if isinstance(b, dict) else None
        if not isinstance(conv, dict):
            raise ArchitectureError(f"{where}: blocks[{i}] has no mobile_inverted_conv")
        convs.append(conv)
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
        depth = 0
        while j < len(convs) and convs[j].get("out_channels") == st.channels:
            at = f"{where} blocks[{j}]"
            c = convs[j]
            stride = st.stride if depth == 0 else 1
            for key, want in (("in_channels", cin if depth == 0 else st.channels),
                              ("stride", stride)):
                if _int(c, key, at) != want:
                    raise ArchitectureError(f"{at}: {key} = {c[key]}: stage {s + 1} of space "
                                            f"{sp.name} has {want}")
            if bool(c.get("use_se")) != st.se or c.get("act_func") != st.act:
                raise ArchitectureError(
                    f"{at}: act_func/use_se = {c.get('act_func')}/{c.get('use_se')}: stage "
                    f"{s + 1} of space {sp.name} has {st.act}/{st.se}")
            k, x = _int(c, "kernel_size", at), c.get("expand_ratio")
            if depth >= sp.max_depth:
                raise ArchitectureError(f"{at}: stage {s + 1} has more than {sp.max_depth} "
                                        "blocks")
            if k not in sp.kernel_sizes:
                raise ArchitectureError(f"{at}: kernel_size = {k}: must be one of "
                                        f"{list(sp.kernel_sizes)}")
            if x not in sp.expand_ratios or isinstance(x, bool):
                raise ArchitectureError(f"{at}: expand_ratio = {x!r}: must be one of "
                                        f"{list(sp.expand_ratios)}")
            mid = c.get("mid_channels")
            cin_b = cin if depth == 0 else st.channels
            if mid is not None and mid != sp.mid_channels(cin_b, x):
                raise ArchitectureError(f"{at}: mid_channels = {mid}: space {sp.name} has "
                                        f"{sp.mid_channels(cin_b, x)} for expand ratio {x}")
            ks[s * sp.max_depth + depth], e[s * sp.max_depth + depth] = k, x
            depth += 1
            j += 1
        if depth not in sp.depths:
            raise ArchitectureError(f"{where}: stage {s + 1} ({st.channels} channels) has "
                                    f"{depth} blocks: must be one of {list(sp.depths)}")
        d.append(depth)
        cin = st.channels
    if j != len(convs):
        raise ArchitectureError(f"{where}: blocks[{j}].out_channels = "
                                f"{convs[j].get('out_channels')}: not a stage of space {sp.name}")
    r = image_size[0] if isinstance(image_size, list) and image_size else image_size
    if isinstance(image_size, list) and len(set(image_size)) > 1:
        raise ArchitectureError(f"run.config: image_size = {image_size}: one size expected")
    return sp.parse({"ks": ks, "e": e, "d": d, "r": r}, off_grid=True)


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
