"""Device profiles: how and where latency is measured, one YAML file per device.

A profile names an inference setting (ONNX Runtime execution provider, threads, batch size,
precision, graph optimisation) and where it runs (this machine, or a Ray node that offers a
custom resource). Latencies measured under one profile are comparable with each other and
with nothing else, so the profile's name is the key of every measurement in the latency
database.

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

import contextlib
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from nas._data import data_dir
from nas.errors import ConfigError, UnknownNameError

__all__ = [
    "EXECUTION_MODES",
    "GRAPH_OPTIMIZATIONS",
    "PLACEMENTS",
    "PRECISIONS",
    "PROVIDERS",
    "DeviceProfile",
    "add_device",
    "check_device_name",
    "device_from_file",
    "device_path",
    "get_device",
    "list_devices",
    "user_devices_dir",
]

PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
PRECISIONS = ("fp32", "int8")
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
PLACEMENTS = ("local", "ray")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_THREADS = 1024
_MAX_BATCH = 65536


def _check_choice(where: str, field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(
            f"{where}: field {field!r} must be one of {list(allowed)}, got {value!r}"
        )


def _check_int(where: str, field: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{where}: field {field!r} must be an integer in [{low}, {high}], got {value!r}"
        )


def _check_bool(where: str, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: field {field!r} must be true or false, got {value!r}")


def check_device_name(name: Any) -> str:
    """Return ``name`` if it is a valid device name, else raise :class:`ConfigError`.

    A name is also a file name: 1-64 characters from letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"device name must be 1-64 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class DeviceProfile:
    """How and where latencies are measured; validated on construction.

    Attributes:
        name: the device's key in the latency database and its file name.
        provider: ONNX Runtime execution provider, one of :data:`PROVIDERS`.
        intra_op_threads: threads inside one operator (ORT ``intra_op_num_threads``).
        inter_op_threads: threads across operators (ORT ``inter_op_num_threads``).
        batch_size: images per inference call.
        precision: ``"fp32"`` or ``"int8"`` (dynamically quantised model).
        graph_optimization: ORT graph optimisation level, one of :data:`GRAPH_OPTIMIZATIONS`.
        execution_mode: ORT execution mode, ``"sequential"`` or ``"parallel"``.
        allow_spinning: whether idle ORT threads spin (``session.intra_op.allow_spinning``).
        placement: ``"local"`` (this process' machine) or ``"ray"`` (a Ray task).
        ray_resource: with ``placement="ray"``, a Ray custom resource the task requests, so
            it lands on the node that is the device (e.g. ``"device:pi4"``).
        external: measurements are imported only; nothing can be measured from here.
        description: free text shown by ``nas devices list``.
    """

    name: str
    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 1
    precision: str = "fp32"
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    allow_spinning: bool = True
    placement: str = "local"
    ray_resource: str | None = None
    external: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        check_device_name(self.name)
        where = f"device profile {self.name!r}"
        _check_choice(where, "provider", self.provider, PROVIDERS)
        _check_int(where, "intra_op_threads", self.intra_op_threads, 1, _MAX_THREADS)
        _check_int(where, "inter_op_threads", self.inter_op_threads, 1, _MAX_THREADS)
        _check_int(where, "batch_size", self.batch_size, 1, _MAX_BATCH)
        _check_choice(where, "precision", self.precision, PRECISIONS)
        _check_choice(where, "graph_optimization", self.graph_optimization, GRAPH_OPTIMIZATIONS)
        _check_choice(where, "execution_mode", self.execution_mode, EXECUTION_MODES)
        _check_bool(where, "allow_spinning", self.allow_spinning)
        _check_choice(where, "placement", self.placement, PLACEMENTS)
        if self.ray_resource is not None:
            if not isinstance(self.ray_resource, str) or not self.ray_resource.strip():
                raise ConfigError(
                    f"{where}: field 'ray_resource' must be a non-empty string or null, "
                    f"got {self.ray_resource!r}"
                )
            if self.placement != "ray":
                raise ConfigError(
                    f"{where}: field 'ray_resource' ({self.ray_resource!r}) needs placement "
                    f"'ray', got placement {self.placement!r}"
                )
        _check_bool(where, "external", self.external)
        if not isinstance(self.description, str):
            raise ConfigError(
                f"{where}: field 'description' must be a string, got {self.description!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON and YAML ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, where: str | None = None) -> DeviceProfile:
        """Build a profile from a mapping, validating every field.

        Args:
            d: a mapping with ``name`` and any of the other fields.
            where: what ``d`` came from (e.g. a file name), prefixed to error messages.

        Raises:
            ConfigError: naming the field, the value and what is allowed.
        """
        src = where or "device profile"
        if not isinstance(d, dict):
            raise ConfigError(f"{src}: must be a mapping of fields, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in set(d) - set(known))
        if unknown:
            raise ConfigError(f"{src}: unknown field(s) {unknown}; allowed: {', '.join(known)}")
        if "name" not in d:
            raise ConfigError(f"{src}: missing field 'name'")
        values = dict(d)
        if values.get("description") is None:
            values.pop("description", None)
        # YAML reads "2.0" as a float; accept integral floats for the integer fields.
        for key in ("intra_op_threads", "inter_op_threads", "batch_size"):
            v = values.get(key)
            if isinstance(v, float) and math.isfinite(v) and v.is_integer():
                values[key] = int(v)
        try:
            return cls(**values)
        except ConfigError as exc:
            if where is None:
                raise
            raise ConfigError(f"{where}: {exc}") from None

    def to_yaml(self) -> str:
        """The profile as a YAML document, its description repeated as a leading comment."""
        head = "".join(f"# {line}\n" for line in self.description.splitlines() if line.strip())
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------- folders
def _repo_devices_dir() -> Path | None:
    shipped = data_dir("devices")
    return shipped if isinstance(shipped, Path) else None


def user_devices_dir() -> Path:
    """The folder new profiles are written to (see the module docstring for the order)."""
    env = os.environ.get("NAS_DEVICES_DIR")
    if env:
        return Path(env).expanduser()
    repo = _repo_devices_dir()
    if repo is not None and os.access(repo, os.W_OK):
        return repo
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nas" / "devices"


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


def _parse_yaml(text: str, where: str, stem: str | None) -> DeviceProfile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "name" not in data and stem is not None:
        data = {"name": stem, **data}
    profile = DeviceProfile.from_dict(data, where=where)
    if stem is not None and profile.name != stem:
        raise ConfigError(
            f"{where}: field 'name' is {profile.name!r} but the file is named {stem!r}.yaml; "
            f"they must agree"
        )
    return profile


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
        ConfigError: the device's file is malformed.
    """
    if isinstance(name, DeviceProfile):
        return name
    entry = device_path(name)
    return _parse_yaml(entry.read_text(encoding="utf-8"), where=entry.name, stem=name)


def device_from_file(path: str | Path) -> DeviceProfile:
    """Read a profile from a YAML file; ``name`` defaults to the file's stem.

    Raises:
        ConfigError: the file is missing or a field is bad.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read device profile {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    return DeviceProfile.from_dict(data, where=str(path))


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
        raise ConfigError(
            f"device {profile.name!r} already exists ({device_path(profile.name)}); "
            f"pass overwrite=True (--overwrite) to replace it"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{profile.name}.", suffix=".tmp", dir=folder)
        try:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the profile from other users
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(profile.to_yaml())
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                # link() fails if the target appeared since the check: no silent clobbering
                # when two processes add the same name at once.
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    raise ConfigError(
                        f"device {profile.name!r} already exists ({target}); pass "
                        f"overwrite=True (--overwrite) to replace it"
                    ) from None
                except OSError:  # file systems without hard links
                    os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"cannot write device profile to {folder}: {exc.strerror or exc}; set "
            f"NAS_DEVICES_DIR to a writable folder"
        ) from None
    return target
