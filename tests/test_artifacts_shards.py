"""artifacts.read_shard / read_shards, the one reader of Parquet shards: columns, provenance, one-line errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gsmv.artifacts import read_shard, read_shards, shard_path
from gsmv.errors import GsmvError


def _folder(tmp_path, sizes=(2, 0, 3)):
    for i, n in enumerate(sizes):
        cols = {"a": list(range(n)), "b": [f"s{i}"] * n}
        if i:
            cols["c"] = [float(i)] * n  # a column the first shard lacks
        pq.write_table(pa.table(cols), shard_path(tmp_path, i))
    return tmp_path


def test_read_shards_concatenates_in_order_and_records_each_rows_shard(tmp_path):
    got = read_shards(_folder(tmp_path), ["b"], ["c", "missing"])
    assert got.table.column_names == ["b", "c"]
    assert got.table.column("b").to_pylist() == ["s0", "s0", "s2", "s2", "s2"]
    assert got.table.column("c").to_pylist() == [None, None, 2.0, 2.0, 2.0]
    assert got.paths == [shard_path(tmp_path, i) for i in range(3)]
    assert got.shard_of.tolist() == [0, 0, 2, 2, 2] and got.shard_of.dtype == np.int64
    assert read_shards(tmp_path).table.num_rows == 5  # every column


def test_missing_columns_bad_files_and_empty_folders_are_one_line_errors(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(GsmvError, match=rf"^{shard_path(folder, 0)}: missing column\(s\) c, d$"):
        read_shards(folder, ["a", "c", "d"])
    shard_path(folder, 1).write_bytes(b"not parquet\nat all")
    with pytest.raises(GsmvError, match=rf"^{shard_path(folder, 1)}: unreadable Parquet shard \([^\n]*\)$"):
        read_shard(shard_path(folder, 1), ["a"])
    with pytest.raises(GsmvError, match=r"no shard-\*\.parquet files \(has this stage run\?\)"):
        read_shards(tmp_path / "nothing")
