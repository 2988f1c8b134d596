"""Which files a library reads and how it opens them (only regular files under the chosen roots),
and text and names as they come.

A library is made of files the user did not write (a folder of leaked documents, a zip from a
source): its folders are hostile too. A symbolic link is followed only when its target stays
inside a root (a link to ~/.ssh/id_ed25519 or to /etc/passwd is not indexed); named pipes,
devices and sockets are refused before they are opened, since opening a pipe waits for a
writer for ever and reading /dev/zero never ends; a file is opened without blocking and without
following a link in its last component, checked again once open (its type, and on Linux the
path the open file really has), and read by at most `cap + 1` bytes, whatever its size claims.
Every file passed over is one (path, reason) pair, said in one line by the caller; names that
are not UTF-8 (common in zip archives made on Windows) are kept as Python keeps them
(surrogateescape), so the file is read, and shown with U+FFFD where a byte was not UTF-8.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from research.errors import KitError
from research.units import MB


class FileRefused(KitError):
    """A file the library does not open: the message says why, in one line."""


#: What a file that is no regular file is called in the line that skips it.
SPECIAL = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
#: Flags of every open: no waiting for a pipe's writer, no following a link swapped in at the
#: last moment, no terminal becoming the kit's controlling terminal.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def within(path: str | os.PathLike, roots: Sequence[Path]) -> bool:
    """Whether the real path `path` is one of `roots` or lies under one of them (roots are real).

    `within("/docs/a/b.txt", [Path("/docs")])` -> True; `within("/etc/passwd", [Path("/docs")])` -> False.
    """
    p = Path(path)
    return any(p == r or p.is_relative_to(r) for r in roots)


def what(mode: int) -> str:
    """`what(stat.S_IFIFO | 0o644)` -> "a named pipe"; "not a regular file" for other odd kinds."""
    return SPECIAL.get(stat.S_IFMT(mode), "not a regular file")


#: Document text and names are cleaned of these before they are stored, printed or shown: C0
#: controls but tab and newline (an escape sequence sets a terminal's title or clipboard, moves
#: its cursor, rewrites what is shown), DEL, C1 controls (U+009B is an escape on some terminals),
#: and the bidirectional embeddings, overrides and isolates, which reorder what is shown
#: ("invoice\u202efdp.exe"). Line endings and separators become a newline.
_CLEAN = {c: None for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}
_CLEAN |= {c: None for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
_CLEAN |= {ord(c): "\n" for c in "\r\x0b\x0c\x85\u2028\u2029"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """Text without control characters other than newline and tab; a byte that was not UTF-8 in a
    file name (kept by surrogateescape) becomes U+FFFD. Linear: one translation, one scan.

    `clean("a\\x1b]0;title\\x07b\\r\\n")` -> "a]0;titleb\\n"; `clean("caf\\udce9")` -> "caf\\ufffd".
    """
    return _SURROGATE.sub("\ufffd", text.replace("\r\n", "\n").translate(_CLEAN))


#: What a JSON line may not carry raw to a terminal although JSON allows it: DEL, the C1 controls
#: (U+009B is an escape on some terminals), the bidirectional controls, the line separators.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_line(obj, **kwargs) -> str:
    """`json.dumps(obj, ensure_ascii=False)` that is safe to print: the characters JSON leaves raw
    but a terminal may act on are written as `\\uXXXX` escapes (the data is unchanged).

    `json_line({"a": "x\x9b2J"})` -> '{"a": "x\\u009b2J"}'.
    """
    import json

    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shown(path: str | os.PathLike) -> str:
    """A path as it may be printed on one line: bytes that were not UTF-8 as U+FFFD, no controls.

    `shown("caf\\udce9\\x1b[2J.txt")` -> "caf\\ufffd[2J.txt".
    """
    return clean(os.fspath(path)).replace("\n", " ")


def _refuse_special(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{what(st.st_mode)}, not a file: the library reads regular files only")


@contextlib.contextmanager
def opened(path: Path, roots: Sequence[Path] = ()) -> Iterator[int]:
    """A file descriptor on `path` when it is a regular file whose real path lies in `roots`
    (any real path when `roots` is empty); FileRefused in one line otherwise. Closed on exit."""
    try:
        real = os.path.realpath(path)
        if roots and not within(real, roots):
            raise FileRefused(
                "a link to a file outside the library's folders: not followed (add its folder to index it)"
            )
        _refuse_special(os.stat(real))  # a pipe or a device is never opened
        fd = os.open(real, OPEN_FLAGS)
    except OSError as e:
        raise FileRefused(e.strerror or type(e).__name__) from None
    try:
        _refuse_special(os.fstat(fd))  # swapped for a pipe since the check above
        try:  # the file really opened: an intermediate folder swapped for a link shows here
            opened_as = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened_as = None  # no /proc (macOS): the checks above stand alone
        if roots and opened_as is not None and not within(opened_as, roots):
            raise FileRefused("its folder was changed into a link outside the library's folders while read")
        yield fd
    finally:
        os.close(fd)


def read_capped(fd: int, cap_mb: float, what_kind: str = "a text document") -> bytes:
    """At most `cap_mb` MB read from `fd`: `cap + 1` bytes are asked for, so a file larger than it
    says (a file still growing, a special file) is refused, never read without end."""
    cap = int(cap_mb * MB)
    chunks, total = [], 0
    while total <= cap:
        chunk = os.read(fd, min(1 << 20, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > cap:
        raise FileRefused(f"more than the {cap_mb:g} MB {what_kind} may have")
    return b"".join(chunks)


def read_file(
    path: Path, cap_mb: float, roots: Sequence[Path] = (), what_kind: str = "a text document"
) -> bytes:
    """The bytes of a regular file under `roots`, at most `cap_mb` MB; FileRefused otherwise."""
    with opened(path, roots) as fd:
        return read_capped(fd, cap_mb, what_kind)


def scan(roots: Sequence[Path], wanted) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files under `roots` (real, absolute paths) that `wanted(path)` accepts, in folder order,
    hidden files and folders passed over; and the (path, why) of every one refused.

    Links to folders are not followed; a link to a file is kept when its target lies in a root
    and is not listed under its own name already; pipes, devices and sockets are refused.
    """
    candidates: list[Path] = []
    problems: list[tuple[str, str]] = []
    for root in roots:
        try:
            st = os.lstat(root)
        except OSError:
            problems.append((str(root), "no longer there; its files were dropped"))
            continue
        if stat.S_ISDIR(st.st_mode):
            unreadable: list[OSError] = []
            for folder, dirs, files in os.walk(root, onerror=unreadable.append):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for d in dirs:
                    link = os.path.join(folder, d)
                    if os.path.islink(link) and not within(os.path.realpath(link), roots):
                        problems.append(
                            (link, "a link to a folder outside the library's folders: not followed")
                        )
                candidates += [
                    Path(folder, f) for f in sorted(files) if not f.startswith(".") and wanted(Path(f))
                ]
            problems += [(e.filename or str(root), e.strerror or str(e)) for e in unreadable]
        elif wanted(root):
            candidates.append(root)
        elif stat.S_ISREG(st.st_mode):
            problems.append((str(root), "not a kind of document the library reads"))
        else:
            problems.append(
                (str(root), f"{what(st.st_mode)}, not a file: the library reads regular files only")
            )

    order = {p: i for i, p in reversed(list(enumerate(candidates)))}
    seen: dict[tuple[int, int], Path] = {}
    # files under their own names first, then links: a file reached both ways is read once, by name
    for path in sorted(order, key=lambda p: (os.path.islink(p), order[p])):
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not within(os.path.realpath(path), roots):
                    raise FileRefused(
                        "a link to a file outside the library's folders: not followed "
                        "(add its folder to index it)"
                    )
                st = os.stat(path)
            _refuse_special(st)
        except FileRefused as e:
            problems.append((str(path), str(e)))
            continue
        except OSError as e:  # a dangling link, a file gone since it was listed
            problems.append((str(path), e.strerror or type(e).__name__))
            continue
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first != path:  # a link to a file read already, or a second hard link to it
            problems.append((str(path), f"the same file as {shown(first)}, read under that name"))
    found = sorted(seen.values(), key=order.__getitem__)
    return found, problems


def relative(path: Path, roots: Sequence[Path]) -> tuple[int, str]:
    """(index of the root, path from the root's parent): how a document is named in records and
    exports, without the folders above the one the user chose.

    `relative(Path("/home/j/leaks/a/b.pdf"), [Path("/home/j/leaks")])` -> (0, "leaks/a/b.pdf").
    """
    for i, root in enumerate(roots):
        if path == root or path.is_relative_to(root):
            return i, str(path.relative_to(root.parent))
    raise KitError(f"{shown(path)} is under none of the library's folders")
