"""Thumbnails: each image shown is written once, as a JPEG of at most `SIZE` pixels a side, named by its digest."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

from mrb.data import Record

SIZE = 256  # pixels, the longer side
QUALITY = 80  # JPEG quality
DECODE_PIXELS = 16 * SIZE * SIZE  # a huge image is decoded at reduced size first (where its format allows)


class Thumbnails:
    """The thumbnails of a site under ``img/``: `path_of` writes an image's on first use and names it after."""

    def __init__(self, write: Callable[[str, bytes], None]) -> None:
        self._write = write
        self.written: set[str] = set()

    def path_of(self, record: Record) -> str | None:
        """The site path of `record`'s thumbnail (``img/<digest>.jpg``), or None when it has no image."""
        data = record.encoded_image()
        if data is None:
            return None
        path = f"img/{hashlib.sha256(data).hexdigest()[:20]}.jpg"
        if path not in self.written:
            image = record.decode(DECODE_PIXELS)
            assert image is not None
            image.thumbnail((SIZE, SIZE))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=QUALITY, optimize=True)
            self._write(path, buffer.getvalue())
            self.written.add(path)
        return path
