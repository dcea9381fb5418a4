"""Atomic writes: complete or absent, never half-written; a failed folder write keeps the old one."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from fairlora.storage import write_dir_atomic, write_parquet_atomic, write_text_atomic


def test_text_is_replaced_whole_and_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp files left


def test_parquet_round_trip(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "loss": [0.5, 1.5], "g": [True, False]})
    write_parquet_atomic(tmp_path / "p.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), frame)


def test_failed_folder_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "adapter"
    write_dir_atomic(target, lambda d: (d / "weights").write_text("v1"))

    def broken(d):
        (d / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir_atomic(target, broken)
    assert (target / "weights").read_text() == "v1"
    write_dir_atomic(target, lambda d: (d / "weights").write_text("v2"))
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
