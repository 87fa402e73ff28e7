"""common.io: a reader sees the old content or the new one, never a part; nothing temporary is left behind."""
from __future__ import annotations

import json
import stat

import pytest

from common.io import atomic_write, write_folder_atomic, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and _mode(path) == 0o644

    def broken(tmp):
        open(tmp, "w").write('{"a": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"

    def fill(version):
        def write(tmp):
            (tmp / "sub").mkdir()
            (tmp / "a.txt").write_text(version)
            (tmp / "sub" / "b.txt").write_text(version)
        return write

    write_folder_atomic(out, fill("1"))
    assert (out / "a.txt").read_text() == (out / "sub" / "b.txt").read_text() == "1"
    assert _mode(out) == _mode(out / "sub") == 0o755 and _mode(out / "a.txt") == _mode(out / "sub" / "b.txt") == 0o644

    def broken(tmp):
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        write_folder_atomic(out, broken)
    assert (out / "a.txt").read_text() == "1"
    write_folder_atomic(out, fill("3"))
    assert (out / "a.txt").read_text() == (out / "sub" / "b.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
