"""Search spaces and architectures."""

from nas.space._arch import Architecture
from nas.space._family import (
    FAMILIES,
    FamilySpace,
    Genome,
    ParamsGenome,
    SearchParams,
    SpaceFamily,
    family_part,
)
from nas.space._gpt import GPTArchitecture, GPTArrays, GPTSpace, GPTSpec, kept_blocks
from nas.space._ofa import arch_from_ofa_config, read_ofa_subnet
from nas.space._registry import (
    SPACES,
    get_family_space,
    get_space,
    list_spaces,
    register_space,
)
from nas.space._space import ArchArrays, SearchSpace, make_divisible
from nas.space._spec import SpaceSpec, load_spec

__all__ = [
    "FAMILIES",
    "SPACES",
    "ArchArrays",
    "Architecture",
    "FamilySpace",
    "GPTArchitecture",
    "GPTArrays",
    "GPTSpace",
    "GPTSpec",
    "Genome",
    "ParamsGenome",
    "SearchParams",
    "SearchSpace",
    "SpaceFamily",
    "SpaceSpec",
    "arch_from_ofa_config",
    "family_part",
    "get_family_space",
    "get_space",
    "kept_blocks",
    "list_spaces",
    "load_spec",
    "make_divisible",
    "read_ofa_subnet",
    "register_space",
]
