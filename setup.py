"""Package discovery that pyproject.toml alone cannot express.

The search-space specs (``search_spaces/``) and device profiles (``latency_db/devices/``) live at
the top of the repository, as data, and ship inside the wheel as ``nas._data.*`` packages, so a
non-editable ``pip install .`` carries them.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["nas", "nas.*"]), "nas._data.search_spaces", "nas._data.devices"])
