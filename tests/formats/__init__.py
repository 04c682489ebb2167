"""Writers of miniature datasets in each task's published format, one module per task.

Each module ``tests/formats/<task>.py`` defines ``write(root: Path) -> Path``: it writes a
small copy of the task's files (same names, containers, keys, layouts and dtypes as
published) under `root` and returns the folder to pass as ``data.root``. It may define
``OVERRIDES``: extra command-line overrides its smoke run needs (most need none).
"""
import importlib
import pkgutil
from pathlib import Path

WRITERS = {m.name: importlib.import_module(f"{__name__}.{m.name}")
           for m in pkgutil.iter_modules([str(Path(__file__).parent)])}
