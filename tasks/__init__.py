"""Task modules: importing this package registers every built-in task."""
from tasks import (  # noqa: F401
    cifar10, cifar100, cosmic, darcy, deepsea, digits, ecg, fsd50k, ninapro, psicov, satellite, spherical,
)
