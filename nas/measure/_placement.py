"""Where a timing runs: in this process under the device's lock, or as a Ray task on the
node that advertises the profile's ``ray_resource`` (capacity 1, so one task at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas._ray import start_ray
from nas._settings import ray_address
from nas.devices import DeviceProfile, get_device
from nas.errors import NASError
from nas.measure._lock import device_lock, lock_dir_for
from nas.measure._session import Reference, time_onnx
from nas.measure._timing import TimingConfig, TimingResult

__all__ = ["Timer", "resolve_device"]


def resolve_device(device: str | DeviceProfile) -> DeviceProfile:
    """The profile of ``device`` (a name or already a profile)."""
    return device if isinstance(device, DeviceProfile) else get_device(device)


def _time_task(model: bytes, profile_dict: dict[str, Any], resolution: int,
               config_dict: dict[str, Any],
               input_shape: tuple[int, ...] | None = None,
               reference: Reference | None = None) -> TimingResult:
    profile = DeviceProfile.from_dict(profile_dict)
    res = time_onnx(model, profile, resolution, TimingConfig(**config_dict), input_shape,
                    reference)
    try:
        import ray

        ctx = ray.get_runtime_context()
        res.env["ray"] = {"node_id": ctx.get_node_id(), "task_id": ctx.get_task_id(),
                          "resource": profile.ray_resource}
    except Exception:  # outside Ray: nothing to add
        pass
    return res


class _RayRunner:
    """Runs timings as Ray tasks pinned to the nodes that advertise the profile's resource."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency
            raise NASError("Ray placement needs ray: pip install 'ray[default]'") from exc
        # bound to loopback when local; stopped with the process (its watchdog reaps it)
        start_ray(address)
        self._ray = ray
        self._remote = ray.remote(_time_task)

    def __call__(self, model: bytes, profile: DeviceProfile, resolution: int,
                 config: TimingConfig, input_shape: tuple[int, ...] | None = None,
                 reference: Reference | None = None) -> TimingResult:
        opts: dict[str, Any] = {"num_cpus": max(1, int(profile.intra_op_threads)),
                                "max_retries": 0}
        if profile.ray_resource:
            opts["resources"] = {profile.ray_resource: 1}
        ref = self._remote.options(**opts).remote(
            model, profile.to_dict(), resolution, config.to_dict(), input_shape, reference,
        )
        return self._ray.get(ref)


def _use_ray(profile: DeviceProfile, address: str | None) -> bool:
    return profile.placement == "ray" or bool(address)


class Timer:
    """Times ONNX models on one device with the protocol, locally under the device's lock or
    as a Ray task, whichever the profile (or a Ray ``address``) asks for.

    Args:
        device: a device name or profile.
        lock_dir: folder of the lock files (default: a temporary folder's).
        address: a Ray cluster address (default ``$RAY_ADDRESS``).
        config: the protocol's settings.
    """

    def __init__(self, device: str | DeviceProfile, *, lock_dir: Path | str | None = None,
                 address: str | None = None, config: TimingConfig | None = None) -> None:
        self.profile = resolve_device(device)
        self.address = ray_address(address)
        self.config = config or TimingConfig()
        self.lock_dir = Path(lock_dir) if lock_dir else lock_dir_for(None)
        self._ray = _RayRunner(self.address) if _use_ray(self.profile, self.address) else None

    @property
    def uses_ray(self) -> bool:
        return self._ray is not None

    def __call__(self, model: bytes, resolution: int,
                 input_shape: tuple[int, ...] | None = None,
                 reference: Reference | None = None) -> TimingResult:
        if self._ray is not None:
            return self._ray(model, self.profile, resolution, self.config, input_shape,
                             reference)
        with device_lock(self.profile, self.lock_dir):
            return time_onnx(model, self.profile, resolution, self.config, input_shape,
                             reference)
