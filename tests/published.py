"""Architectures shared by several test modules (importable because tests/conftest.py puts
this folder on ``sys.path``)."""

# A subnet published with Once-for-All (its format: 20 kernel sizes, 20 expand ratios,
# 5 depths, resolution)
OFA_SUBNET = {
    "ks": [3, 3, 5, 7, 3, 3, 5, 3, 7, 7, 3, 7, 3, 7, 5, 5, 3, 3, 5, 5],
    "e": [3, 3, 4, 3, 6, 4, 3, 4, 6, 4, 6, 6, 6, 4, 4, 6, 6, 6, 6, 3],
    "d": [2, 2, 2, 3, 3],
    "r": 224,
}
