"""Where device profiles live: one YAML file per device, shipped or added by a user.

Shipped profiles live in ``latency_db/devices/*.yaml`` (``nas._data.devices`` in a wheel).
Profiles added by users are written to a writable folder: ``$NAS_DEVICES_DIR`` if set, else
the repository's ``latency_db/devices/`` when it is writable, else
``~/.local/share/nas/devices`` (``$XDG_DATA_HOME/nas/devices``). A user profile with the name
of a shipped one shadows it (only with ``overwrite=True``).

Example:
    >>> add_device(DeviceProfile("pi4-1t", placement="ray", ray_resource="device:pi4"))
    >>> get_device("pi4-1t").intra_op_threads
    1
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from nas._data import data_dir
from nas._io import atomic_path, read_yaml
from nas._settings import data_home, devices_dir_from_env
from nas.devices._profile import DeviceProfile
from nas.errors import ConfigError, UnknownNameError

__all__ = [
    "add_device",
    "device_from_file",
    "device_path",
    "get_device",
    "list_devices",
    "user_devices_dir",
]


# ---------------------------------------------------------------------------- folders
def _repo_devices_dir() -> Path | None:
    shipped = data_dir("devices")
    return shipped if isinstance(shipped, Path) else None


def user_devices_dir() -> Path:
    """The folder new profiles are written to (see the module docstring for the order)."""
    env = devices_dir_from_env()
    if env is not None:
        return env
    repo = _repo_devices_dir()
    if repo is not None and os.access(repo, os.W_OK):
        return repo
    return data_home() / "devices"


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

    Args:
        profile: the profile to save as ``<name>.yaml``.
        overwrite: replace (or shadow, for a shipped one) an existing device of that name.

    Returns:
        The path of the written file.

    Raises:
        ConfigError: a device of that name exists and ``overwrite`` is false, or the folder
            cannot be written.
    """
    if not isinstance(profile, DeviceProfile):
        raise ConfigError(f"profile must be a DeviceProfile, got {type(profile).__name__}")
    folder = user_devices_dir()
    target = folder / f"{profile.name}.yaml"
    if not overwrite and profile.name in _entries():
        raise _exists(profile.name, device_path(profile.name))
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(profile.to_yaml())
                fh.flush()
                os.fsync(fh.fileno())
            if not overwrite:
                _claim(tmp, target, profile.name)
    except OSError as exc:
        raise ConfigError(
            f"cannot write device profile to {folder}: {exc.strerror or exc}; set "
            f"NAS_DEVICES_DIR to a writable folder"
        ) from None
    return target


def _claim(tmp: Path, target: Path, name: str) -> None:
    """Link the written file to ``target`` unless a file appeared there since the check.

    Two processes adding the same name at once: one wins, the other gets the error, and no
    profile is silently clobbered. (``atomic_path`` then renames ``tmp`` onto its own link,
    which changes nothing, and removes it.)
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists(name, target) from None
    except OSError:  # file systems without hard links: atomic_path's replace writes it
        pass


def _exists(name: str, where: object) -> ConfigError:
    return ConfigError(
        f"device {name!r} already exists ({where}); pass overwrite=True (--overwrite) to "
        f"replace it"
    )
