"""Where device profiles live: one YAML file per device, shipped or added by a user.

Shipped profiles live in ``latency_db/devices/*.yaml`` (``nas._data.devices`` in a wheel) and
are only read. Profiles added by users (``nas devices add``, or an import for a new external
device) are written to the user folder: ``$NAS_DEVICES_DIR`` if set, else
``~/.local/share/nas/devices`` (``$XDG_DATA_HOME/nas/devices``), never into the package's
shipped data. A user profile with the name of a shipped one shadows it (only with
``overwrite=True``).

Adding a profile is safe under concurrency: of several processes adding one name at once,
those whose settings equal the profile already there succeed (the first description is
kept), and one whose settings differ gets the "already exists" error; no file is clobbered.

Example:
    >>> add_device(DeviceProfile("pi4-1t", placement="ray", ray_resource="device:pi4"))
    >>> get_device("pi4-1t").intra_op_threads
    1
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from nas._data import data_dir
from nas._io import atomic_write, read_yaml
from nas._settings import data_home, devices_dir_from_env
from nas.devices._profile import DeviceProfile
from nas.errors import ConfigError, UnknownNameError

__all__ = [
    "add_device",
    "device_from_file",
    "device_path",
    "get_device",
    "list_devices",
    "load_devices",
    "user_devices_dir",
]


# ---------------------------------------------------------------------------- folders
def user_devices_dir() -> Path:
    """The folder new profiles are written to: ``$NAS_DEVICES_DIR``, else
    ``$XDG_DATA_HOME/nas/devices`` (never the shipped ``latency_db/devices/``)."""
    env = devices_dir_from_env()
    return env if env is not None else data_home() / "devices"


def _sources() -> list[Traversable]:
    """Folders searched for profiles, the user's first so that it shadows shipped ones."""
    out: list[Traversable] = []
    user = user_devices_dir()
    if user.is_dir():
        out.append(user)
    shipped = data_dir("devices")
    if not (isinstance(shipped, Path) and shipped.resolve() == user.resolve()):
        out.append(shipped)
    return out


def _entries() -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    for folder in _sources():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.endswith(".yaml") and not entry.name.startswith("."):
                found.setdefault(entry.name[: -len(".yaml")], entry)
    return found


def _read(path: Path, stem: str) -> DeviceProfile:
    """The profile in ``path``; its ``name`` defaults to ``stem`` (the file's)."""
    data: Any = read_yaml(path, DeviceProfile.what)
    if isinstance(data, dict) and "name" not in data:
        data = {"name": stem, **data}
    return DeviceProfile.from_dict(data, where=str(path))


# ---------------------------------------------------------------------------- public API
def list_devices() -> list[str]:
    """Names of all known device profiles, shipped and user-added, sorted."""
    return sorted(_entries())


def load_devices() -> tuple[list[DeviceProfile], list[str]]:
    """Every known profile that reads, sorted by name, and one error line for each that
    does not (a broken file in the devices folder hides nothing else)."""
    profiles: list[DeviceProfile] = []
    errors: list[str] = []
    for name in list_devices():
        try:
            profiles.append(get_device(name))
        except ConfigError as exc:
            errors.append(str(exc))
    return profiles, errors


def device_path(name: str) -> Traversable:
    """The YAML file that defines device ``name`` (a user file shadows a shipped one).

    Raises:
        UnknownNameError: listing the known names.
    """
    entries = _entries()
    try:
        return entries[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown device {name!r}; known devices: {', '.join(sorted(entries)) or '(none)'}"
            f" (add one with `nas devices add`)"
        ) from None


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """The profile of device ``name`` (a profile is returned as is).

    Raises:
        UnknownNameError: listing the known names.
        ConfigError: the device's file is malformed, or names another device.
    """
    if isinstance(name, DeviceProfile):
        return name
    # A wheel's resources may not be plain files; as_file gives a path either way.
    with resources.as_file(device_path(name)) as path:
        profile = _read(path, name)
    if profile.name != name:
        raise ConfigError(
            f"{path}: name = {profile.name!r}: must match the file name, but the file is "
            f"named {name!r}.yaml"
        )
    return profile


def device_from_file(path: str | Path) -> DeviceProfile:
    """Read a profile from a YAML file; ``name`` defaults to the file's stem.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or a field is bad.
    """
    path = Path(path)
    return _read(path, path.stem)


def add_device(profile: DeviceProfile, overwrite: bool = False) -> Path:
    """Write ``profile`` to the user devices folder, atomically.

    Adding a profile whose settings equal those of the existing one of that name (the
    description aside: it is a note, not a setting) changes nothing and returns the existing
    file, so concurrent creators of one device all succeed.

    Args:
        profile: the profile to save as ``<name>.yaml``.
        overwrite: replace (or shadow, for a shipped one) an existing device of that name.

    Returns:
        The path of the written (or already present, equal) file.

    Raises:
        ConfigError: a device of that name exists with other settings and ``overwrite`` is
            false, or the folder cannot be written.
    """
    if not isinstance(profile, DeviceProfile):
        raise ConfigError(f"profile must be a DeviceProfile, got {type(profile).__name__}")
    folder = user_devices_dir()
    target = folder / f"{profile.name}.yaml"
    if not overwrite and profile.name in _entries():
        return _same_or_raise(profile, device_path(profile.name))
    try:
        if overwrite:
            atomic_write(target, profile.to_yaml())
        elif not _create(target, profile.to_yaml()):
            return _same_or_raise(profile, target)
    except OSError as exc:
        raise ConfigError(
            f"cannot write device profile to {folder}: {exc.strerror or exc}; set "
            f"NAS_DEVICES_DIR to a writable folder"
        ) from None
    return target


def _create(target: Path, text: str) -> bool:
    """Create ``target`` holding ``text``, whole or not at all; False when a file appeared
    there since the check (another process adding the same name), which is left as it is."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)  # fails if the name exists: no clobbering
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: replace it into place
            os.replace(tmp, target)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _same_or_raise(profile: DeviceProfile, existing: Traversable) -> Path:
    """The existing file when its profile has ``profile``'s settings; else the error."""
    with resources.as_file(existing) as path:
        current = _read(path, profile.name)
        if _settings(current) == _settings(profile):
            return Path(path)
    raise _exists(profile.name, existing)


def _settings(profile: DeviceProfile) -> dict[str, Any]:
    return {k: v for k, v in profile.to_dict().items() if k != "description"}


def _exists(name: str, where: object) -> ConfigError:
    return ConfigError(
        f"device {name!r} already exists ({where}); pass overwrite=True (--overwrite) to "
        f"replace it"
    )
