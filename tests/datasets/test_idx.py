from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from lightning_insight.datasets import read_idx, read_idx_pair
from lightning_insight.datasets.idx import IDX_DTYPES

CODES = {np.dtype(v).newbyteorder("="): code for code, v in IDX_DTYPES.items()}


def idx_bytes(array: np.ndarray, *, code: int | None = None) -> bytes:
    """An IDX file's bytes written by hand: magic, big-endian sizes, big-endian values."""
    native = np.dtype(array.dtype).newbyteorder("=")
    code = CODES[native] if code is None else code
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(native.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, *, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_every_type_plain_and_gzip(
    tmp_path: Path, compress: bool, dtype: type[np.generic]
) -> None:
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = write(tmp_path / "images-idx3-ubyte", idx_bytes(array), compress=compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.uint8)
    path = write(tmp_path / "labels.idx", idx_bytes(array), compress=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_the_mnist_layout_by_hand(tmp_path: Path) -> None:
    # the magic numbers of MNIST's files: 0x00000803 images, 0x00000801 labels
    images = struct.pack(">IIII", 0x803, 2, 2, 3) + bytes(range(12))
    labels = struct.pack(">II", 0x801, 2) + bytes([9, 4])
    x, y = read_idx_pair(
        write(tmp_path / "i", images, compress=False), write(tmp_path / "l", labels, compress=True)
    )
    assert x.shape == (2, 2, 3) and x[1, 1, 2] == 11
    assert y.tolist() == [9, 4]


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data_names_the_file_and_the_dimensions(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))[:-100]
    path = write(tmp_path / "train-images-idx3-ubyte", data, compress=compress)
    message = (
        f"'{re.escape(str(path))}' to hold 7840 bytes of uint8 data for dimensions 10 x 28 x 28, "
        "but got 7740 bytes: the file is truncated"
    )
    with pytest.raises(ValueError, match=message):
        read_idx(path)


def test_dimensions_that_disagree_with_a_longer_file(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((4,), dtype=np.int32)) + bytes(4)
    path = write(tmp_path / "labels", data, compress=False)
    with pytest.raises(
        ValueError, match=r"16 bytes of int32 .* got 20 bytes: .* longer than its header"
    ):
        read_idx(path)


def test_truncated_header(tmp_path: Path) -> None:
    short = write(tmp_path / "short", bytes([0, 0, 8]), compress=False)
    with pytest.raises(
        ValueError, match=r"'.*short' to start with a 4-byte IDX magic.*only 3 bytes"
    ):
        read_idx(short)
    sizes = write(tmp_path / "sizes", struct.pack(">BBBBI", 0, 0, 8, 3, 10), compress=True)
    with pytest.raises(
        ValueError, match=r"'.*sizes' to hold 3 dimension sizes .*16 header bytes.*only 8"
    ):
        read_idx(sizes)


@pytest.mark.parametrize(
    ("magic", "shown"),
    [
        (bytes([1, 0, 8, 1]), "0x01000801"),  # not two zero bytes
        (bytes([0, 0, 7, 1]), "0x00000701"),  # unknown type code
        (bytes([0, 0, 8, 0]), "0x00000800"),  # no dimensions
        (b"P5\n2", "0x50350A32"),  # a PGM image, not IDX
    ],
)
def test_bad_magic_number(tmp_path: Path, magic: bytes, shown: str) -> None:
    path = write(tmp_path / "t10k-images-idx3-ubyte.gz", magic + bytes(8), compress=True)
    with pytest.raises(
        ValueError,
        match=rf"'.*t10k-images-idx3-ubyte.gz' to start with an IDX magic number .* but got {shown}",
    ):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int16)))
    path = tmp_path / "labels.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(
        ValueError, match=r"'.*labels.gz' to be a complete gzip-compressed IDX file"
    ):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"IDX file at '.*nothing-here'"):
        read_idx(tmp_path / "nothing-here")


def test_mislabelled_pair_names_both_files(tmp_path: Path) -> None:
    images = write(
        tmp_path / "train-images", idx_bytes(np.zeros((5, 2, 2), np.uint8)), compress=True
    )
    labels = write(tmp_path / "t10k-labels", idx_bytes(np.zeros(4, np.uint8)), compress=False)
    message = (
        rf"images file '{re.escape(str(images))}' and the labels file '{re.escape(str(labels))}' "
        r"to hold the same number of samples, but got 5 images and 4 labels: a mislabelled pair"
    )
    with pytest.raises(ValueError, match=message):
        read_idx_pair(images, labels)


def test_swapped_pair(tmp_path: Path) -> None:
    images = write(tmp_path / "images", idx_bytes(np.zeros((5, 2, 2), np.uint8)), compress=False)
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8)), compress=False)
    with pytest.raises(ValueError, match=r"images file '.*labels' to have 3 or more .* swapped"):
        read_idx_pair(labels, images)
    two_d = write(tmp_path / "two-d", idx_bytes(np.zeros((5, 2), np.uint8)), compress=False)
    with pytest.raises(ValueError, match=r"labels file '.*two-d' to have 1 dimension"):
        read_idx_pair(images, two_d)
