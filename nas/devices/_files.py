"""Where device profiles live: one YAML file per device, shipped or added by a user.

Shipped profiles live in ``latency_db/devices/*.yaml`` (``nas._data.devices`` in a wheel) and
are only read. Profiles added by users (``nas devices add``, or an import for a new external
device) are written to the user folder: ``$NAS_DEVICES_DIR`` if set, else
``~/.local/share/nas/devices`` (``$XDG_DATA_HOME/nas/devices``), never into the package's
shipped data. A user profile with the name of a shipped one shadows it (only with
``overwrite=True``).

The profiles are the registry :data:`DEVICES` (the one plug-in shape, :mod:`nas._plugin`):
its files are read on each lookup (another process may add one at any time), and a plug-in
package may register profiles in memory too (``DEVICES.register(DeviceProfile(...))`` from
its ``nas.plugins`` entry point); a file of that name shadows such a profile.

Adding a profile is safe under concurrency: of several processes adding one name at once,
those whose settings equal the profile already there succeed (the first description is
kept), and one whose settings differ gets the "already exists" error; no file is clobbered.

Example:
    >>> add_device(DeviceProfile("pi4-1t", placement="ray", ray_resource="device:pi4"))
    >>> get_device("pi4-1t").intra_op_threads
    1
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from nas._data import data_dir
from nas._entry_points import plugin_source
from nas._io import atomic_write, read_yaml
from nas._registry import Registry
from nas._settings import data_home, devices_dir_from_env
from nas.devices._profile import DeviceProfile
from nas.errors import ConfigError, UnknownNameError

__all__ = [
    "DEVICES",
    "DeviceRegistry",
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


# ---------------------------------------------------------------------------- the registry
class DeviceRegistry(Registry[DeviceProfile]):
    """The device profiles: the YAML files (the user's shadowing the shipped ones), read on
    every lookup, then the profiles that plug-ins registered in memory."""

    def __init__(self) -> None:
        super().__init__("device", checks="nas.devices._checks:CHECKS")

    def add(self, name: Any, item: DeviceProfile) -> DeviceProfile:
        """Register a profile in memory (a plug-in's); a file's name is taken.

        Raises:
            ConfigError: not a profile, a name other than its own, or a name taken.
        """
        if not isinstance(item, DeviceProfile):
            raise ConfigError(f"a device must be a DeviceProfile, got {type(item).__name__}")
        if name != item.name:
            raise ConfigError(f"device {item.name!r} registered under another name {name!r}")
        if name in _entries():
            raise ConfigError(f"device {name!r} is already registered (a profile file)")
        return super().add(name, item)

    def _registered(self) -> dict[str, DeviceProfile]:
        self._load()
        return self._items

    def get(self, name: str) -> DeviceProfile:
        """The profile of device ``name``: its file, read now, else a plug-in's.

        Raises:
            UnknownNameError: listing the known names.
            ConfigError: the device's file is malformed, or names another device.
        """
        entries = _entries()
        if name in entries:
            return _read_entry(entries[name], name)
        registered = self._registered()
        if isinstance(name, str) and name in registered:
            return registered[name]
        known = sorted(set(entries) | set(registered))
        raise UnknownNameError(
            f"unknown device {name!r}; known devices: {', '.join(known) or '(none)'}"
            f" (add one with `nas devices add`)"
        )

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in set(_entries()) | set(self._registered())
                      if fnmatch.fnmatch(n, pattern))

    def items(self) -> list[tuple[str, DeviceProfile]]:
        """Every profile that reads (:func:`load_devices` reports those that do not)."""
        out = []
        for name in self.names():
            try:
                out.append((name, self.get(name)))
            except ConfigError:
                continue
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __len__(self) -> int:
        return len(self.names())

    def unregister(self, name: str) -> None:
        if name not in self._registered():
            raise UnknownNameError(f"device {name!r} was not registered by a plug-in")
        del self._items[name]

    def source(self, name: str) -> str:
        """Where device ``name`` comes from: ``"nas"`` (shipped), ``"user"`` (the user
        folder) or the distribution of the plug-in that registered it."""
        entries = _entries()
        if name in entries:
            shipped = data_dir("devices")
            return "nas" if _inside(entries[name], shipped) else "user"
        return plugin_source(self.get(name)).distribution


def _inside(entry: Traversable, folder: Traversable) -> bool:
    if isinstance(entry, Path) and isinstance(folder, Path):
        return entry.resolve().parent == folder.resolve()
    return not isinstance(entry, Path)  # a resource inside the installed package


def _read_entry(entry: Traversable, name: str) -> DeviceProfile:
    # A wheel's resources may not be plain files; as_file gives a path either way.
    with resources.as_file(entry) as path:
        profile = _read(path, name)
    if profile.name != name:
        raise ConfigError(
            f"{path}: name = {profile.name!r}: must match the file name, but the file is "
            f"named {name!r}.yaml"
        )
    return profile


#: Every known device profile, by name (see the module docstring).
DEVICES = DeviceRegistry()


# ---------------------------------------------------------------------------- public API
def list_devices() -> list[str]:
    """Names of all known device profiles, shipped, user-added and registered by plug-ins,
    sorted."""
    return DEVICES.names()


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
        ConfigError: a device a plug-in registered (it has no file).
    """
    entries = _entries()
    if name in entries:
        return entries[name]
    DEVICES.get(name)  # unknown: the error listing the known names
    raise ConfigError(f"device {name!r} is registered by the plug-in package "
                      f"{DEVICES.source(name)!r}; it has no profile file")


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """The profile of device ``name`` (a profile is returned as is).

    Raises:
        UnknownNameError: listing the known names.
        ConfigError: the device's file is malformed, or names another device.
    """
    if isinstance(name, DeviceProfile):
        return name
    return DEVICES.get(name)


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
    # a plug-in's, in memory (not `in DEVICES`, which reads the folder again: a file another
    # process created since the check above is the equal-settings case of _create below)
    registered = DEVICES._registered()
    if not overwrite and profile.name in registered:
        source = plugin_source(registered[profile.name]).distribution
        raise _exists(profile.name, f"registered by {source}")
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
