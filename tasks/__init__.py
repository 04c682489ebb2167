"""Task modules: importing this package registers every built-in task."""
from tasks import digits, ecg  # noqa: F401
