"""A reader for the IDX format of MNIST and Fashion-MNIST (plain or gzipped files).

An IDX file is a 4-byte magic number (two zero bytes, a data-type code, the number of dimensions), one
big-endian unsigned 32-bit size per dimension, then the values in C order, big-endian. Every check
names the file: a wrong magic number, a size field that disagrees with the bytes that follow (a
truncated or padded file), or an images file and a labels file that do not hold the same number of
samples (a mislabelled pair).

Only numpy is needed (no Lightning).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_pair"]

#: IDX data-type codes (third byte of the magic number) and the big-endian numpy types they stand for.
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with gzip's magic bytes."""
    if not path.is_file():
        raise FileNotFoundError(f"Expected an IDX file at '{path}', but there is no such file.")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError) as error:  # a cut-off or corrupt gzip stream
        raise ValueError(
            f"Expected '{path}' to be a complete gzip-compressed IDX file, but decompressing it failed "
            f"({error}). HINT: the file is probably truncated; download or reinstall it."
        ) from error


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain; gzip is recognised by its content, not the name).

    Args:
        path: The file.

    Returns:
        The array, with the file's shape and its data type in native byte order (``uint8`` for images
        and labels of MNIST and Fashion-MNIST).

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the magic number is wrong (not two zero bytes, an unknown data-type code, or no
            dimensions), or the sizes disagree with the number of bytes (a truncated or padded file);
            the message names the file.

    Example:
        >>> import struct, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> path = Path(folder) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 2, 1]))
        >>> read_idx(path)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"Expected '{path}' to start with a 4-byte IDX magic number, but the file holds only "
            f"{len(data)} bytes. HINT: the file is truncated or empty."
        )
    zero_a, zero_b, code, ndim = data[0], data[1], data[2], data[3]
    if zero_a != 0 or zero_b != 0 or code not in IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"Expected '{path}' to start with an IDX magic number (0x00 0x00, a type code in "
            f"[{codes}], a number of dimensions >= 1), but got 0x{int.from_bytes(data[:4], 'big'):08X}. "
            "HINT: this is not an IDX file (or not a gzip-compressed one)."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"Expected '{path}' to hold {ndim} dimension sizes after its magic number ({header} header "
            f"bytes), but the file holds only {len(data)} bytes. HINT: the file is truncated."
        )
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise ValueError(
            f"Expected '{path}' to hold {expected} bytes of {dtype.name} data for dimensions "
            f"{' x '.join(map(str, shape))}, but got {actual} bytes: the file is {problem}. HINT: "
            "download or reinstall the file."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file and check that they belong together.

    Args:
        images_path: IDX file of shape ``(N, H, W)`` (or ``(N, H, W, C)``).
        labels_path: IDX file of shape ``(N,)``.

    Returns:
        ``(images, labels)`` as read by :func:`read_idx`.

    Raises:
        ValueError: For anything :func:`read_idx` rejects, images with fewer than 3 dimensions, labels
            that are not 1-D, or counts that disagree (a mislabelled pair); messages name both files.

    Example:
        >>> import struct, tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "images").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 1, 1) + bytes(2))
        >>> _ = (folder / "labels").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([3, 4]))
        >>> images, labels = read_idx_pair(folder / "images", folder / "labels")
        >>> images.shape, labels.tolist()
        ((2, 1, 1), [3, 4])
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim < 3:
        raise ValueError(
            f"Expected the images file '{images_path}' to have 3 or more dimensions (N, H, W), but got "
            f"shape {images.shape}. HINT: are the images and labels files swapped?"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"Expected the labels file '{labels_path}' to have 1 dimension (N,), but got shape "
            f"{labels.shape}. HINT: are the images and labels files swapped?"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected the images file '{images_path}' and the labels file '{labels_path}' to hold the "
            f"same number of samples, but got {images.shape[0]} images and {labels.shape[0]} labels: a "
            "mislabelled pair. HINT: check that both files come from the same split (train or t10k)."
        )
    return images, labels
