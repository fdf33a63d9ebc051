"""Writing files so that a crash or a concurrent reader never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``path`` via a temporary file in the same folder, then rename it into place.

    ``content`` is text, bytes, or a function that writes the file it is given (for writers
    such as ``np.savez`` or a media muxer). The rename is atomic on one file system, so the
    file is either absent or whole: what marks work as done (``metrics.json``, a cache part)
    is never half-written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
