"""What every device profile must do beyond the shared plug-in contract: the registry's own
checks (``Registry(checks=...)`` of :data:`~nas.devices.DEVICES`), run by :mod:`nas.testing`
on the shipped profiles, the user's and any a plug-in package registers.

Each check takes a profile and raises ``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

from nas.devices._profile import PLACEMENTS, PROVIDERS, DeviceProfile, check_device_name
from nas.errors import ConfigError

__all__ = ["CHECKS"]


def _expect(ok: object, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


def check_is_a_device_profile(profile: DeviceProfile) -> None:
    """A :class:`~nas.devices.DeviceProfile` with a valid device name (a file name too)."""
    _expect(isinstance(profile, DeviceProfile), f"{profile!r} is not a DeviceProfile")
    try:
        check_device_name(profile.name)
    except ConfigError as exc:
        raise AssertionError(str(exc)) from None


def check_yaml_round_trip(profile: DeviceProfile) -> None:
    """Written as YAML (as ``nas devices add`` writes it) and read back, it is the same
    profile, its description included."""
    try:
        back = DeviceProfile.from_dict(yaml.safe_load(profile.to_yaml()), where="round trip")
    except ConfigError as exc:
        raise AssertionError(f"device {profile.name!r} does not read back from its YAML: "
                             f"{exc}") from None
    _expect(back == profile, f"device {profile.name!r} reads back from its YAML as {back!r}")
    _expect(back.description == profile.description,
            f"device {profile.name!r}: its description reads back as {back.description!r}")


def check_placement_and_provider(profile: DeviceProfile) -> None:
    """A known execution provider and placement; a Ray resource only with Ray placement."""
    _expect(profile.provider in PROVIDERS,
            f"device {profile.name!r}: provider {profile.provider!r} is not one of {PROVIDERS}")
    _expect(profile.placement in PLACEMENTS, f"device {profile.name!r}: placement "
            f"{profile.placement!r} is not one of {PLACEMENTS}")
    _expect(profile.ray_resource is None or profile.placement == "ray",
            f"device {profile.name!r}: ray_resource {profile.ray_resource!r} without "
            f"placement 'ray'")


#: the checks of every device profile, in order
CHECKS: tuple[Callable[[DeviceProfile], None], ...] = (
    check_is_a_device_profile, check_yaml_round_trip, check_placement_and_provider,
)
