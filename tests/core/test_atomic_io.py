"""Atomic writes: the whole file or the old one, never a half-written file, and readable by other users."""

import os
import stat

import pytest

from cogniedit.atomic_io import atomic_save, atomic_write


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_text_and_by_name_writes_are_complete_and_readable_by_all(tmp_path):
    atomic_write(tmp_path / "a" / "cases.jsonl", lambda f: f.write("{}\n"))
    assert (tmp_path / "a" / "cases.jsonl").read_text() == "{}\n"
    atomic_save(tmp_path / "w.bin", lambda name: open(name, "wb").write(b"\x00\x01"))
    assert (tmp_path / "w.bin").read_bytes() == b"\x00\x01"
    assert mode(tmp_path / "a" / "cases.jsonl") == mode(tmp_path / "w.bin") == 0o644


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_save"])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, writer):
    target = tmp_path / "results.json"
    target.write_text("old")

    def boom(_):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        (atomic_write if writer == "atomic_write" else atomic_save)(target, boom)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
