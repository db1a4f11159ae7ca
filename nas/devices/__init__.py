"""Device profiles: how and where a subnet is run to time it, one YAML file per device.

The profiles are the registry :data:`DEVICES` (shipped files, the user's, and any a plug-in
package registers). Below the latency database (which stores measurements keyed by profile
name) and below :mod:`nas.latency` (which measures and predicts under a profile).
"""

from nas.devices._files import (
    DEVICES,
    DeviceRegistry,
    add_device,
    device_from_file,
    device_path,
    get_device,
    list_devices,
    load_devices,
    user_devices_dir,
)
from nas.devices._profile import (
    CACHES,
    EXECUTION_MODES,
    GRAPH_OPTIMIZATIONS,
    PHASES,
    PLACEMENTS,
    PRECISIONS,
    PROVIDERS,
    DeviceProfile,
    Workload,
    check_device_name,
)

__all__ = [
    "CACHES",
    "DEVICES",
    "EXECUTION_MODES",
    "GRAPH_OPTIMIZATIONS",
    "PHASES",
    "PLACEMENTS",
    "PRECISIONS",
    "PROVIDERS",
    "DeviceProfile",
    "DeviceRegistry",
    "Workload",
    "add_device",
    "check_device_name",
    "device_from_file",
    "device_path",
    "get_device",
    "list_devices",
    "load_devices",
    "user_devices_dir",
]
