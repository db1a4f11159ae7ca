"""The device profiles as a replica reads them on every predict request, without re-reading
their files each time.

``nas.devices`` reads the profile files on each lookup (another process may add one at any
time): listing the folders and parsing a profile's YAML cost a few milliseconds, more than
everything else a one-architecture prediction does. :class:`DeviceCache` keeps what it read
for as long as the profile folders are unchanged (their modification times: a profile added,
removed or replaced with ``nas devices add`` changes its folder's), and never longer than
:data:`MAX_AGE_S`, so that a file edited in place is seen within that.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._data import data_dir

if TYPE_CHECKING:
    from nas.devices import DeviceProfile

__all__ = ["DEVICE_CACHE", "MAX_AGE_S", "DeviceCache"]

#: the longest a read profile or list of names is used without reading the files again
MAX_AGE_S = 1.0

#: nanoseconds within which a folder's modification time may not tell two changes apart
#: (file times come from a coarse clock, a tick of up to 10 ms)
_RACY_NS = 20_000_000

_Stamp = tuple[tuple[str, int, int] | None, ...]


def _stat(folder: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (folder, st.st_mtime_ns, st.st_ino)


class DeviceCache:
    """Device names and profiles, read through ``nas.devices`` and kept while the profile
    folders stay as they were (at most ``max_age_s``); thread-safe (sync routes run in
    threads).

    Args:
        max_age_s: the longest anything read is kept.
    """

    def __init__(self, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        shipped: Any = data_dir("devices")  # in a zipped package, not a folder: unchanging
        self._shipped = str(shipped) if isinstance(shipped, Path) else None
        self._lock = threading.Lock()
        self._folders: list[str] | None = None
        self._stamp: _Stamp | None = None
        self._racy = False
        self._read_at = 0.0
        self._names: list[str] | None = None
        self._profiles: dict[str, DeviceProfile] = {}

    def names(self) -> list[str]:
        """:func:`nas.devices.list_devices`, as of the last change of the folders."""
        self._check()
        return list(self._names_read())

    def __contains__(self, name: object) -> bool:
        self._check()
        return isinstance(name, str) and name in self._names_read()

    def get(self, name: str) -> DeviceProfile:
        """``nas.devices.DEVICES.get(name)``: the profile as of the last change of the
        folders; an unknown name or a malformed file raises as it does there (read again
        each time: errors are not kept)."""
        self._check()
        return self._profile(name)

    def known(self, name: str) -> DeviceProfile | None:
        """The profile of ``name`` if it is a known device (:meth:`get` if it is in
        :meth:`names`), else None; the folders looked at once."""
        self._check()
        return self._profile(name) if name in self._names_read() else None

    def _names_read(self) -> list[str]:
        names = self._names
        if names is None:
            from nas.devices import list_devices

            names = self._names = list_devices()
        return names

    def _profile(self, name: str) -> DeviceProfile:
        profile = self._profiles.get(name)
        if profile is None:
            from nas.devices import DEVICES

            profile = DEVICES.get(name)
            self._profiles[name] = profile  # a known name: as many as there are devices
        return profile

    def _find_folders(self) -> list[str]:
        """The folders ``nas.devices`` reads: the user's (from the environment) and the
        shipped one."""
        from nas.devices import user_devices_dir

        folders = [str(user_devices_dir())]
        if self._shipped is not None:
            folders.append(self._shipped)
        return folders

    def _check(self) -> None:
        """Drop what was read once a folder changed or it is older than ``max_age_s``."""
        now = time.monotonic()
        expired = now - self._read_at >= self.max_age_s
        # where the folders are is looked up again (from the environment) only on expiry:
        # it costs more than the rest of a lookup
        folders = self._find_folders() if expired or self._folders is None else self._folders
        stamp = tuple(_stat(f) for f in folders)
        if stamp == self._stamp and not expired and not self._racy:
            return
        with self._lock:
            # the stamp is taken before reading: a change made while reading is seen by the
            # next lookup
            self._names = None
            self._profiles = {}
            self._folders = folders
            self._stamp = stamp
            self._read_at = now
            # a folder changed within a clock tick of now may change again with the same
            # modification time: read again until it is older (git's "racily clean" index)
            recent = time.time_ns() - _RACY_NS
            self._racy = any(st is not None and st[1] >= recent for st in stamp)

#: the replica's one cache (the service's routes and request models read it)
DEVICE_CACHE = DeviceCache()
