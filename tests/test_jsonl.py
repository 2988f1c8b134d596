"""Records that survive a crash (research.jsonl), judged by the bytes on disk and by json itself:
each test says what the file must hold, byte for byte, after a write, a cut write, a full disk.
tests/test_cli.py adds a real file size limit and a real full disk (/dev/full).
"""

import errno
import json
import os
import stat

import pytest

from research import jsonl
from research.errors import KitError


def test_a_record_is_one_line_of_json_in_utf8_private_to_its_owner(tmp_path):
    path = tmp_path / "new" / "r.jsonl"
    assert jsonl.append({"q": "Où?", "n": 1}, str(path)) == path
    jsonl.append({"q": "b"}, path)
    assert path.read_bytes() == '{"q": "Où?", "n": 1}\n{"q": "b"}\n'.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_after_a_cut_last_line_the_next_record_starts_a_fresh_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": ')
    jsonl.append({"c": 3}, path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": \n{"c": 3}\n'
    assert jsonl.read(path) == ([{"a": 1}, {"c": 3}], 1)


def test_an_empty_file_gets_no_blank_first_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    jsonl.append({"a": 1}, path)
    assert path.read_bytes() == b'{"a": 1}\n'


def test_each_record_is_synced_to_disk_before_the_file_is_closed(tmp_path, monkeypatch):
    """Durable: a power cut after append() returns keeps the record (fsync of that very file)."""
    events, real_fsync, real_close = [], os.fsync, os.close
    path = tmp_path / "r.jsonl"

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        real_fsync(fd)

    def close(fd):
        events.append(("close", os.readlink(f"/proc/self/fd/{fd}")))
        real_close(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "close", close)
    jsonl.append({"a": 1}, path)
    assert events == [("fsync", str(path), len(b'{"a": 1}\n')), ("close", str(path))]


class ShortWrites:
    """os.write that writes `first` bytes, then (optionally after another writer appends `other`)
    fails with `error`, the way a disk that fills up mid-record does."""

    def __init__(self, monkeypatch, path, first, error, other=b""):
        self.real, self.path, self.first, self.error, self.other = os.write, path, first, error, other
        self.calls = 0
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd, data):
        self.calls += 1
        if self.calls == 1:
            return self.real(fd, data[: self.first])
        if self.other:
            with open(self.path, "ab") as f:
                f.write(self.other)
        raise OSError(self.error, os.strerror(self.error))


@pytest.mark.parametrize(
    "error, said",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EFBIG, "the file reached its size limit (ulimit -f, or the filesystem's largest file)"),
    ],
)
def test_no_room_takes_the_partial_record_back_and_says_so_in_one_line(tmp_path, monkeypatch, error, said):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    ShortWrites(monkeypatch, path, 5, error)
    with pytest.raises(KitError) as e:
        jsonl.append({"b": "x" * 40}, path)
    assert str(e.value) == (
        f"{said}: the record was not saved to {path}; the records before it are intact; "
        "free some space and run again"
    )
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert path.read_bytes() == b'{"a": 1}\n'


def test_a_partial_record_after_a_cut_line_is_taken_back_to_the_cut_line(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b"')
    ShortWrites(monkeypatch, path, 3, errno.ENOSPC)
    with pytest.raises(KitError):
        jsonl.append({"c": 3}, path)
    assert path.read_bytes() == b'{"a": 1}\n{"b"'


def test_what_another_writer_appended_meanwhile_is_never_cut_off(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    ShortWrites(monkeypatch, path, 4, errno.ENOSPC, other=b'{"other": 2}\n')
    with pytest.raises(KitError):
        jsonl.append({"b": 2}, path)
    assert path.read_bytes() == b'{"a": 1}\n{"b"{"other": 2}\n'


def test_other_write_errors_are_raised_as_they_are_and_leave_the_bytes(tmp_path, monkeypatch):
    """An I/O error is not "no room": it is not rephrased, and nothing is cut (it may not be ours)."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    ShortWrites(monkeypatch, path, 4, errno.EIO)
    with pytest.raises(OSError) as e:
        jsonl.append({"b": 2}, path)
    assert not isinstance(e.value, KitError) and e.value.errno == errno.EIO
    assert path.read_bytes() == b'{"a": 1}\n{"b"'


def test_a_failing_undo_still_reports_the_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    ShortWrites(monkeypatch, path, 4, errno.ENOSPC)

    def ftruncate(fd, size):
        raise OSError(errno.EINVAL, "cannot truncate this")

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with pytest.raises(KitError, match="the disk is full"):
        jsonl.append({"b": 2}, path)


def test_a_full_disk_when_syncing_is_no_room_too(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"

    def fsync(fd):
        raise OSError(errno.ENOSPC, "full")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KitError, match="the disk is full"):
        jsonl.append({"b": 2}, path)
    assert path.read_bytes() == b""  # the whole record taken back


@pytest.mark.parametrize("error, raised", [(errno.ENOSPC, KitError), (errno.EACCES, PermissionError)])
def test_opening_the_file(tmp_path, monkeypatch, error, raised):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "open", fail)
    with pytest.raises(raised) as e:
        jsonl.append({"a": 1}, tmp_path / "r.jsonl")
    if raised is KitError:
        assert str(e.value).startswith(
            f"the disk is full: the record was not saved to {tmp_path / 'r.jsonl'};"
        )


def test_short_writes_are_continued_where_they_stopped(tmp_path, monkeypatch):
    """A write may take fewer bytes than given (a signal, a pipe-like file system): the rest follows."""
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[:3]))
    path = tmp_path / "r.jsonl"
    jsonl.append({"abc": "défg"}, path)
    assert path.read_bytes() == '{"abc": "défg"}\n'.encode()


def test_the_last_byte_is_the_one_at_the_size_seen(tmp_path):
    """What append() looks at to know whether the file ends a line: the byte before the size it saw,
    not what another writer appended since."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    assert jsonl._last_byte(path, 9) == b"\n" and jsonl._last_byte(path, 8) == b"}"


def test_records_are_read_as_utf8_whatever_the_locale(tmp_path):
    """A device with a C locale (no UTF-8 mode, no coercion) reads its records as they were written."""
    import subprocess
    import sys

    path = tmp_path / "r.jsonl"
    path.write_bytes('{"q": "Où est Zürich?"}\n'.encode())
    assert jsonl.read(path) == ([{"q": "Où est Zürich?"}], 0)  # here, and in a child with a C locale:
    code = "import sys; from research import jsonl; print(ascii(jsonl.read(sys.argv[1])))"
    env = os.environ | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ascii(([{"q": "Où est Zürich?"}], 0))


def test_the_file_is_opened_for_appending(tmp_path, monkeypatch):
    flags, real_open = [], os.open

    def spy(path, flag, mode=0o777):
        flags.append((flag, mode))
        return real_open(path, flag, mode)

    monkeypatch.setattr(os, "open", spy)
    jsonl.append({"a": 1}, tmp_path / "r.jsonl")
    flag, mode = flags[-1]
    assert flag & os.O_APPEND and flag & os.O_CREAT and flag & os.O_WRONLY and mode == 0o600


def test_read_keeps_json_objects_only_and_counts_what_it_skips(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"a": 1}\n'
        b"\n"  # blank lines: neither records nor damage
        b"   \n"
        b"[1, 2]\n"  # valid JSON, not a record
        b"3\n"
        b'"text"\n'
        b"null\n"
        b'{"b": \n'  # cut
        b'{"c": "\xff"}\n'  # a byte that is not UTF-8: the record, with U+FFFD
        b'{"d": 4}'  # the last line without its newline: complete, kept
    )
    assert jsonl.read(path) == ([{"a": 1}, {"c": "\ufffd"}, {"d": 4}], 5)


def test_read_of_no_file_is_nothing(tmp_path):
    assert jsonl.read(tmp_path / "none.jsonl") == ([], 0)
    assert jsonl.read(str(tmp_path / "none.jsonl")) == ([], 0)


def test_done_is_the_latest_usable_record_per_run_and_question(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [
        {"run": "r1", "id": "q1", "answer": "old"},
        {"run": "r1", "id": "q1", "answer": "new"},  # later lines win
        {"run": "r1", "id": "q2", "answer": None, "error": "timeout"},
        {"run": "r2", "id": "q1", "answer": "other run"},
        {"id": "q3", "answer": "no run"},
        {"run": "r1", "answer": "no id"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert jsonl.done(path, "run", ["r1"]) == {
        ("r1", "q1"): rows[1],
        ("r1", "q2"): rows[2],
        ("r1", None): rows[5],
    }
    usable = jsonl.done(path, "run", {"r1", "r2"}, usable=lambda r: "error" not in r)
    assert usable == {("r1", "q1"): rows[1], ("r2", "q1"): rows[3], ("r1", None): rows[5]}
    assert jsonl.done(path, "run", iter(["r1"])) == jsonl.done(path, "run", ["r1"])  # any iterable
    assert jsonl.done(path, "run", []) == {}
