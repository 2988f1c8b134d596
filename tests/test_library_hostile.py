"""A library is hostile input too: each attack found on the library, with real files.

Real symbolic links, a real named pipe, /dev/zero behind a real link, a real file name that is
not UTF-8, a real 10 KB heading, real escape sequences, a real damaged calibration, real modes
read back with os.stat. What could hang or eat memory without its fix runs in a child process
under a time and an address-space bound, so a regression fails here instead of hanging the suite.
"""

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import FakeBackend
from library_fixtures import minimal_pdf, write_zim
from test_library import docs

from research import confidence
from research import files as library_files
from research.cli.commands import main
from research.confidence import calibration
from research.engine import Engine, Sampling
from research.engine.prompts import STOPS, ChatFormat
from research.errors import KitError
from research.library import build as library_build
from research.library import grounded
from research.library import sources as src
from research.library import store as library
from research.library import zim as library_zim
from research.page import sources as page_sources

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a hostile file may cost in a child, Python's start and the kit's imports included; each
#: attack below took minutes, hours or for ever before its fix.
TIME_BOUND = 60
#: Address space of that child: a read without end (/dev/zero) dies at it with a MemoryError.
MEMORY_BOUND = 2 << 30
#: Resident memory the child may reach: the kit's imports take ~120 MB here.
RSS_BOUND_MB = 400
#: Control characters that must never reach a terminal or the page: an OSC escape setting the
#: window title, OSC 52 writing the clipboard, a CSI clearing the screen, a C1 CSI, a bell, a
#: carriage return that rewrites a line, and a right-to-left override that reorders one.
HOSTILE = "\x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 \x1b[2J \x9b31m \r \u202e"
CONTROLS = set("\x1b\x07\x9b\r\u202e")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private user data folder: libraries are made there, never in ~/.local/share."""
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    library._OPEN.clear()
    yield tmp_path / "home"
    library._OPEN.clear()


def bounded(code: str, *args, env: dict | None = None, timeout: float = TIME_BOUND):
    """Run `code` in a fresh Python under MEMORY_BOUND; (result, seconds). The code prints its
    peak resident memory in MB as the last line of stderr ("peak N")."""

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))

    # VmHWM, this program's own peak: ru_maxrss would also count the pytest worker it was forked
    # from (Linux keeps the pre-exec high-water mark), 400 MB and more late in a full run.
    epilogue = (
        "\nimport sys\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print('peak', int(hwm) // 1024, file=sys.stderr)\n"
    )
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + epilogue, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return r, time.perf_counter() - t


def peak_mb(r) -> int:
    return int(r.stderr.strip().splitlines()[-1].split()[-1])


ADD = """
import sys
from research.cli.commands import main
code = main(["library", "add", *sys.argv[2:], "--name", sys.argv[1], "--quiet"])
"""


def skipped(err: str) -> dict[str, str]:
    """The `skipped PATH: why` lines of `library add`, by file name."""
    out = {}
    for line in err.splitlines():
        if line.startswith("skipped "):
            path, why = line[len("skipped ") :].split(": ", 1)
            out[Path(path).name] = why
    return out


# ---- only regular files under the chosen folders ----


def test_links_out_of_the_folder_pipes_and_dev_zero_are_refused_in_one_line_each(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The vault code of the Zanzibar office is 4711.")
    folder = docs(tmp_path / "docs")
    os.symlink(outside / "secret.txt", folder / "link.txt")
    os.symlink(outside, folder / "outside_folder")
    os.symlink("/dev/zero", folder / "zero.txt")
    os.mkfifo(folder / "pipe.txt")
    os.symlink(folder / "pipe.txt", folder / "pipe_link.md")
    os.symlink(folder / "ferry.txt", folder / "same_ferry.txt")  # inside: read once, by its own name
    r, seconds = bounded(ADD, "hostile", folder, env={"RESEARCH_HOME": str(home)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = skipped(r.stderr)
    assert "outside the library's folders" in lines["link.txt"]
    assert "outside the library's folders" in lines["zero.txt"]
    assert "outside the library's folders" in lines["outside_folder"]
    assert lines["pipe.txt"].startswith("a named pipe, not a file")
    assert lines["pipe_link.md"].startswith("a named pipe, not a file")
    assert lines["same_ferry.txt"].startswith("the same file as ")
    assert "4 files" in r.stdout and seconds < TIME_BOUND  # the four documents, nothing hung
    assert peak_mb(r) < RSS_BOUND_MB  # /dev/zero was never read
    lib = library.open_library("hostile")
    everything = " ".join(lib.stored(n)["x"] for n in range(lib.manifest["passages"]))
    assert "Zanzibar" not in everything and "4711" not in everything
    assert not lib.search("vault code Zanzibar office")


def test_a_pipe_or_a_device_named_as_a_root_or_reached_inside_one_is_never_opened(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")
    os.symlink("/dev/zero", folder / "zero.txt")
    found, problems = library_files.scan([folder / "pipe.txt", Path("/dev/zero")], src.kind_of)
    assert found == [] and sorted(why.split(",")[0] for _, why in problems) == [
        "a character device",
        "a named pipe",
    ]
    # with /dev among the roots the link is inside them: the device itself is refused, unopened
    with pytest.raises(library_files.FileRefused, match="a character device"):
        library_files.read_file(folder / "zero.txt", 1, [folder, Path("/dev")])
    with pytest.raises(library_files.FileRefused, match="a named pipe"):
        library_files.read_file(folder / "pipe.txt", 1, [folder])


def test_reads_stop_at_their_cap_whatever_the_file_says(tmp_path):
    r, _ = bounded(
        """
        import os
        from research import files as library_files
        fd = os.open("/dev/zero", os.O_RDONLY)  # st_size 0, endless: only the cap stops it
        try:
            library_files.read_capped(fd, 64)
        except library_files.FileRefused as e:
            print(e)
        """
    )
    assert r.stdout.strip() == "more than the 64 MB a text document may have", r.stderr[-500:]
    assert peak_mb(r) < 64 + RSS_BOUND_MB


def test_a_file_name_that_is_not_utf8_is_read_and_shown(home, tmp_path, capsys):
    folder = docs(tmp_path / "docs")
    name = os.fsencode(folder) + b"/caf\xe9 \x1b[2J.txt"  # Latin-1, as zip archives from Windows
    with open(name, "wb") as f:
        f.write(b"The Gannet sails from Harrow pier at dawn.")
    assert main(["library", "add", str(folder), "--name", "names", "--quiet"]) == 0
    assert "5 files" in capsys.readouterr().out
    assert main(["library", "search", "names", "Gannet Harrow pier"]) == 0
    out = capsys.readouterr().out
    assert "docs/caf\ufffd [2J.txt" in out and "\x1b" not in out
    assert library_build.update("names", progress=False).kept == 5  # known again by its name


def test_text_in_odd_encodings_is_read_as_written(tmp_path):
    """A Windows "Unicode" file is UTF-16 with a BOM (it holds NUL bytes: it was refused as
    binary); a Windows-1252 file is not UTF-8 (its accents were lost to U+FFFD); one stray byte
    in a UTF-8 file must not turn the file into mojibake."""
    cases = {
        "utf16.txt": "Café crème at the Gare du Nord.".encode("utf-16"),
        "cp1252.txt": "Café crème at the Gare du Nord.".encode("cp1252"),
        "stray.txt": "Café crème at the Gare du Nord. ".encode() * 200 + b"\xff",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        text = " ".join(t for _, t in src.read(tmp_path / name).blocks)
        assert "Café crème at the Gare du Nord." in text, name


# ---- linear time ----

REDUCE = """
import sys, time
from pathlib import Path
from research.library import sources as src
t = time.perf_counter()
n = len(src.passages(src.read(Path(sys.argv[1]))))
print(round(time.perf_counter() - t, 3), n)
"""

#: Inputs that were super-linear: (file name, content). Before: the 10 KB heading ~15 min (2,000
#: characters took 14.7 s, cubic), 20,000 emphasis markers 12.3 s, 20,000 `![` 11.6 s (quadratic),
#: 20,000 `<!--` 3.8 s (html.parser, CVE-2025-6069). Each here is 1 MB or more.
SLOW = {
    "heading.md": "# a" + " " * 10_000 + "b\n\ntext\n\n" + ("# a" + " \t" * 5_000 + "b #\ntext\n") * 100,
    "emphasis.md": "*a " * 400_000,
    "links.md": "[a](" * 300_000 + "\n" + "![" * 500_000 + "\n" + "[a](" + " " * 1_000_000,
    "comments.html": "<!--" * 300_000,
    "tags.html": "<a " * 300_000 + "\n" + "</a" * 300_000 + "<p>" * 300_000,
    "entities.md": "&#" + "1" * 1_000_000 + " &amp;" * 100_000,
    "sentence.txt": "x" * 30_000_000,  # one word, cut at positions: slicing it again and again was quadratic
}


@pytest.mark.parametrize("name", SLOW)
def test_what_was_superlinear_reads_in_linear_time(tmp_path, name):
    path = tmp_path / name
    path.write_text(SLOW[name])
    r, _ = bounded(REDUCE, path)
    assert r.returncode == 0, r.stderr[-1000:]
    seconds, n = r.stdout.split()
    print(f"{name}: {path.stat().st_size / 2**20:.1f} MB read in {seconds} s, {n} passages")
    assert float(seconds) < 10 and peak_mb(r) < RSS_BOUND_MB + 16 * path.stat().st_size / 2**20


def test_a_file_past_its_deadline_is_one_line(tmp_path):
    path = tmp_path / "big.md"
    path.write_text("*a " * 300_000)
    with pytest.raises(src.SourceError, match="took too long to read") as e:
        src.read(path, timeout=1e-9)
    assert "\n" not in str(e.value)


def test_copies_of_a_document_are_read_once(home, tmp_path, monkeypatch):
    """A folder of copies of one slow document (a 99,000-page PDF took a minute) costs its reading
    time once, not once per copy; the copies are named as such, and an update remembers."""
    folder = tmp_path / "copies"
    folder.mkdir()
    text = "The gannet dives from thirty metres.\n" * 50
    for name in ("a.md", "b.md", "c.md"):
        (folder / name).write_text(text)
    (folder / "other.md").write_text("The bakery opens at seven.\n")
    read = []
    real = src.read
    monkeypatch.setattr(src, "read", lambda path, *a, **k: read.append(path.name) or real(path, *a, **k))
    report = library_build.add("copies", [folder], progress=False)
    assert sorted(read) == ["a.md", "other.md"], read
    assert sorted((Path(p).name, why) for p, why in report.skipped) == [
        ("b.md", f"the same text as {folder / 'a.md'}: read once"),
        ("c.md", f"the same text as {folder / 'a.md'}: read once"),
    ]
    read.clear()
    (folder / "d.md").write_text(text)  # a new copy of a file kept from the last version
    report = library_build.add("copies", [], progress=False)
    assert read == [] and ("d.md", f"the same text as {folder / 'a.md'}: read once") in [
        (Path(p).name, why) for p, why in report.skipped
    ]
    (folder / "a.md").unlink()  # the original gone: a copy is read in its place
    report = library_build.add("copies", [], progress=False)
    assert read == ["b.md"] and len(report.skipped) == 2, (read, report.skipped)


def test_a_document_without_a_word_to_search_for_is_one_line(home, tmp_path, capsys):
    """Found by the property tests: text of one-letter words only made bm25s raise ValueError
    (an empty vocabulary) out of `library add`, as a traceback."""
    folder = tmp_path / "signs"
    folder.mkdir()
    (folder / "signs.html").write_text("<title>0</title><p>0 a ! 7 . x</p>")
    assert main(["library", "add", str(folder), "--name", "signs", "--quiet"]) == 1
    err = capsys.readouterr().err
    why = "its files hold no word to search for"
    assert err == f"error: library 'signs' would hold no text to search ({why}); nothing was made\n"
    docs(folder)  # with real documents beside it, the library is made
    assert main(["library", "add", str(folder), "--name", "signs", "--quiet"]) == 0


# ---- bounded amplification ----

#: The bound the README states: a document's index is at most this many times its size, plus the
#: files every library has (the manifest, BM25's parameters, NumPy headers).
INDEX_RATIO, INDEX_FIXED = 5, 16 * 1024


def index_ratio(folder: Path, name: str) -> float:
    library_build.add(name, [folder], progress=False)
    size = sum(p.stat().st_size for p in folder.iterdir())
    index = library.Library(name).size_bytes()
    assert index <= INDEX_RATIO * size + INDEX_FIXED, (index, size)
    return index / size


def test_a_huge_heading_is_not_copied_into_every_passage(home, tmp_path):
    """The 651 KB Markdown file whose 50 KB heading made a 96 MB index (147x)."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    folder = tmp_path / "worst"
    folder.mkdir()
    text = "# " + " ".join(rng.choice(words) for _ in range(10_000)) + "\n\n"
    while len(text) < 650_000:
        text += " ".join(rng.choice(words) for _ in range(80)) + ".\n\n"
    (folder / "worst.md").write_text(text)
    ratio = index_ratio(folder, "worst")
    print(f"651 KB Markdown with a 50 KB heading: index {ratio:.2f}x its size")
    hit = library.open_library("worst").search(words[7], 1)[0]
    assert len(hit.title) <= src.MAX_TITLE_CHARS


def test_many_tiny_sections_share_passages(home, tmp_path):
    """A section of one word was a passage of its own: its record, offsets and index entries cost
    many times its few bytes. Headings take turns, so no two sections in a row are the same."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "tiny.md").write_text("".join(f"# {chr(65 + i % 26)}\n\nyes\n\n" for i in range(5000)))
    ratio = index_ratio(folder, "tiny")
    print(f"5,000 one-word sections: index {ratio:.2f}x its size")


#: Text of nothing but distinct short tokens (a list of random IDs) is where BM25's own index costs
#: most: each distinct 3-character token has its vocabulary entry (~12 bytes), its column pointer
#: (8) and its posting (8), against 4 bytes of text. The README states this second bound.
VOCABULARY_RATIO = 8.5


def test_distinct_tokens_cost_the_vocabulary_and_no_more(home, tmp_path):
    import itertools
    import random
    import string

    tokens = ["".join(t) for t in itertools.product(string.ascii_lowercase + string.digits, repeat=3)]
    random.Random(0).shuffle(tokens)
    folder = tmp_path / "ids"
    folder.mkdir()
    (folder / "ids.txt").write_text(" ".join(tokens[:30_000]))
    library_build.add("ids", [folder], progress=False)
    size, index = (folder / "ids.txt").stat().st_size, library.Library("ids").size_bytes()
    print(f"30,000 distinct 3-character tokens: index {index / size:.2f}x its size")
    assert index <= VOCABULARY_RATIO * size + INDEX_FIXED


# ---- names and text as they come ----


def chat_engine(reply: str) -> Engine:
    e = Engine(FakeBackend([reply], n_ctx=4000), ChatFormat("chatml", stops=STOPS["chatml"]), "fake")
    e.__dict__["sha256"] = "fake-sha256"
    return e


def test_escape_sequences_never_reach_the_terminal_or_the_page(home, tmp_path, capsys):
    import argparse

    from research.cli import library as cli_library

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / f"memo{HOSTILE}.md").write_text(
        f"# Title {HOSTILE}\n\n## Section {HOSTILE}\n\nThe Gannet sails at dawn {HOSTILE} from Harrow pier.\n"
    )
    (folder / "page.html").write_text(f"<title>T {HOSTILE}</title><p>The Osprey {HOSTILE} sails at noon.</p>")
    assert main(["library", "add", str(folder), "--name", "esc", "--quiet"]) == 0
    assert main(["library", "search", "esc", "Gannet Harrow Osprey"]) == 0
    assert main(["library", "search", "esc", "Gannet Harrow Osprey", "--json"]) == 0
    hit = library.open_library("esc").search("Gannet Harrow", 1)[0]
    assert main(["library", "show", "esc", hit.id]) == 0
    args = argparse.Namespace(library="esc", lookup="always", prompt="Gannet?", system=None, json=False)
    cli_library.chat(chat_engine(f"The Gannet {HOSTILE} [1]"), args, Sampling(max_tokens=64))
    out, err = capsys.readouterr()
    assert "Gannet" in out and "Osprey" in out and "Title" in out
    assert not CONTROLS & set(out + err), [c for c in out + err if c in CONTROLS]
    sources = page_sources.sources_markdown(
        "esc", grounded.ground(chat_engine("x"), "esc", "Gannet?").sources
    )
    assert "Gannet" in sources and not CONTROLS & set(sources + page_sources.passage_text("esc", hit.id))


# ---- paths relative to the chosen folder ----


def test_records_ratings_and_exports_carry_no_absolute_path(home, tmp_path):
    from research.page import host as chat

    folder = docs(tmp_path / "private" / "leaks")
    library_build.add("t", [folder], progress=False)
    host = chat.ModelHost()
    host.engine = chat_engine("Marigold Dawn [1]")
    host.use_library("s", "t", "always")
    shown = list(host.respond([{"role": "user", "content": "Newest ferry?"}], "", Sampling(), "s"))[-1]
    rated = host.rate(shown, thumbs="up", path=tmp_path / "r.jsonl").read_text()
    md, js = host.export(shown, "", tmp_path / "export")
    out = grounded.answer(chat_engine("Marigold Dawn"), "t", "Newest ferry?")
    for text in (rated, md.read_text(), js.read_text(), json.dumps(out, default=str), shown[-1]["content"]):
        assert str(tmp_path) not in text
    assert out["sources"][0]["source"] == "leaks/ferry.txt"


# ---- private data at rest ----


def modes(top: Path) -> dict[str, str]:
    """The mode of every file and folder under `top` (itself too) that group or others can use."""
    loose = {}
    for root, dirs, files in os.walk(top):
        for p in [Path(root), *(Path(root, n) for n in dirs + files)]:
            mode = os.stat(p, follow_symlinks=False).st_mode
            if mode & 0o077:
                loose[str(p.relative_to(top.parent))] = stat.filemode(mode)
    return loose


def test_nothing_in_the_data_folder_is_readable_by_others(tmp_path, monkeypatch, capsys):
    from research.page import host as chat
    from research.ratings import store as ratings

    data = tmp_path / "fresh-home"  # made by the kit
    monkeypatch.setenv("RESEARCH_HOME", str(data))
    monkeypatch.delenv("RESEARCH_RATINGS_FILE", raising=False)
    library._OPEN.clear()
    old = os.umask(0o022)  # the usual umask, whatever the test runner's
    try:
        folder = docs(tmp_path / "docs")
        assert main(["library", "add", str(folder), "--name", "mine", "--quiet"]) == 0
        assert main(["library", "update", "mine", "--quiet"]) == 0
        assert main(["library", "search", "mine", "newest ferry", "--json"]) == 0
        pid = json.loads(capsys.readouterr().out.splitlines()[-1])["hits"][0]["id"]
        assert main(["library", "show", "mine", pid]) == 0
        X = [[-0.1 * (i % 7)] for i in range(40)]
        y = [float(i % 7 < 4) for i in range(40)]
        calibration.save(calibration.fit("mean_logprob", ("mean_logprob",), X, y, "sha", {"source": "test"}))
        host = chat.ModelHost()
        host.engine = chat_engine("Marigold Dawn")
        host.use_library("s", "mine", "always")
        shown = list(host.respond([{"role": "user", "content": "Newest ferry?"}], "", Sampling(), "s"))[-1]
        host.rate(shown, thumbs="up")  # into the data folder's ratings.jsonl
        assert ratings.default_path().is_file()
    finally:
        os.umask(old)
        library._OPEN.clear()
    made = {p.relative_to(data).parts[0] for p in data.rglob("*")}
    assert {"libraries", "calibrations", "ratings.jsonl"} <= made
    assert modes(data) == {}


# ---- confidence never costs an answer ----

DAMAGED = {
    "not json": "{not json",
    "a list": "[1, 2]",
    "NaN weights": '{"method": "free", "model_sha256": "S", "model": {"names": ["mean_logprob"], '
    '"mean": [0], "scale": [1], "weights": [NaN], "bias": 0}, "fitted_on": {}}',
    "wrong shape": '{"method": "free", "model_sha256": "S", "model": {"names": ["mean_logprob"], '
    '"mean": [0, 1], "scale": [1], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "zero scale": '{"method": "free", "model_sha256": "S", "model": {"names": ["mean_logprob"], '
    '"mean": [0], "scale": [0], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "strings for numbers": '{"method": "free", "model_sha256": "S", "model": {"names": ["mean_logprob"], '
    '"mean": ["0"], "scale": [1], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "unknown signal": '{"method": "free", "model_sha256": "S", "model": {"names": ["__class__"], '
    '"mean": [0], "scale": [1], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "another method": '{"method": "p_true", "model_sha256": "S", "model": {"names": ["mean_logprob"], '
    '"mean": [0], "scale": [1], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "another model": '{"method": "free", "model_sha256": "OTHER", "model": {"names": ["mean_logprob"], '
    '"mean": [0], "scale": [1], "weights": [1], "bias": 0}, "fitted_on": {}}',
    "deep nesting": "[" * 100_000,
}


@pytest.mark.parametrize("case", [*DAMAGED, "a named pipe", "larger than the cap"])
def test_a_damaged_calibration_costs_the_figure_not_the_answer(tmp_path, monkeypatch, capsys, case):
    from research.page import host as chat

    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    calibration._DAMAGED.clear()
    sha = "S" * 64
    path = calibration.folder(sha, style=calibration.CHAT) / "free.json"  # what the page reads
    path.parent.mkdir(parents=True)
    if case == "a named pipe":
        os.mkfifo(path)
    elif case == "larger than the cap":
        path.write_text(" " * (calibration.MAX_FILE_MB * 2**20 + 1))
    else:
        path.write_text(DAMAGED[case].replace('"S"', f'"{sha}"'))
    engine = Engine(FakeBackend(["Paris."], n_ctx=400, logprobs=[-0.1]), ChatFormat("chatml"), "f")
    engine.__dict__["sha256"] = sha
    # the page: the answer shows, its figure says why it has no calibrated confidence
    host = chat.ModelHost()
    host.engine = engine
    for _ in range(2):
        shown = list(host.respond([{"role": "user", "content": "Capital?"}], "", Sampling(), "s"))[-1]
        content = chat.text_of(shown[-1]["content"])
        assert content.startswith("Paris.") and confidence.DAMAGED in content
    # the terminal: the same, through research.cli.commands's figures line
    from research.cli import commands as cli

    conf = cli._confidence(
        engine, list(engine.stream([{"role": "user", "content": "Capital?"}], Sampling()))[-1]
    )
    assert conf.p is None and cli._confidence_line(conf) == f"confidence: {confidence.DAMAGED}"
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and str(path) in err and "Traceback" not in err  # named once
    path.unlink()
    X, y = [[-0.1 * (i % 7)] for i in range(40)], [float(i % 7 < 4) for i in range(40)]
    path.write_text(
        json.dumps(calibration.fit("free", ("mean_logprob",), X, y, sha, {"answers": "chat"}).as_dict())
    )
    assert confidence.of_signals({"mean_logprob": -0.1}, sha).p is not None  # a good one is used again
    assert confidence.of_signals({"mean_logprob": -0.1}, sha, style=calibration.EVAL).p is None  # its own


# ---- PDF, ZIM, remove ----


def test_a_pdf_whose_text_holds_line_separators_is_read_whole(tmp_path):
    path = tmp_path / "seps.pdf"
    path.write_bytes(
        minimal_pdf(["First line\x85second line\x86third line."], to_unicode={0x85: "\u2028", 0x86: "\x85"})
    )
    doc = src.read(path)
    text = " ".join(t for _, t in doc.blocks)
    assert "First line" in text and "second line" in text and "third line" in text


ZIM_ARTICLES = {
    "A/Zorbia": ("Zorbia", "<html><body><p>Zorbia is an island. Its capital is Quellport.</p></body></html>"),
    # The 160 KB article of unclosed comments that cost 10.5 s a question, for every session.
    "A/Slow": ("Slow", "<p>Quellport harbour slow article.</p>" + "<!--" * 40_000),
}


def test_the_zim_probe_reads_entries_from_the_whole_archive(tmp_path, monkeypatch):
    """The probe read entry 0 only, then the whole file was read in the kit's process: a damaged
    entry further on crashed the kit, not a child. It reads a sample spread over the archive."""
    articles = {f"A/P{i:03d}": (f"Page {i}", f"<p>Page {i} of the wiki.</p>") for i in range(200)}
    path = write_zim(tmp_path / "big.zim", articles, fulltext=False)
    read = []
    real = library_zim._article
    monkeypatch.setattr(library_zim, "_article", lambda a, i, m: read.append(i) or real(a, i, m))
    fd = os.open(path, os.O_RDONLY)
    try:
        library_zim._probe(f"/dev/fd/{fd}")  # the child's own code, run here to see what it reads
    finally:
        os.close(fd)
    assert len(read) >= library_zim.PROBE_SAMPLE and read[0] == 0 and max(read) >= 199


def test_zim_files_are_never_opened_in_the_kits_own_process(home, tmp_path, monkeypatch):
    folder = tmp_path / "zims"
    folder.mkdir()
    write_zim(folder / "wiki.zim", ZIM_ARTICLES, fulltext=True)
    write_zim(folder / "plain.zim", {"A/Kell": ("Kell", "<p>Kell Hill has a telescope.</p>")}, fulltext=False)
    monkeypatch.setitem(sys.modules, "libzim", None)  # `import libzim` here fails: children only
    monkeypatch.setitem(sys.modules, "libzim.reader", None)
    monkeypatch.setitem(sys.modules, "libzim.search", None)
    report = library_build.add("z", [folder], progress=False)
    assert report.skipped == [] and report.files == 2
    lib = library.open_library("z")
    assert "Quellport" in lib.search("capital of Zorbia Quellport", 1)[0].text
    assert "telescope" in lib.search("Kell telescope", 1)[0].text


def test_a_zim_article_is_reduced_once_and_a_search_keeps_its_budget(home, tmp_path, capsys):
    folder = tmp_path / "zims"
    folder.mkdir()
    write_zim(folder / "wiki.zim", ZIM_ARTICLES, fulltext=True)
    library_build.add("z", [folder], progress=False)
    lib = library.open_library("z")
    request = lib._zim_request(0, op="search", query="Quellport harbour", terms=["quellport", "harbour"], k=3)
    first = library_zim.SEARCHER.call(request, library.SEARCH_BUDGET_S)
    again = library_zim.SEARCHER.call(request, library.SEARCH_BUDGET_S)
    assert first["reduced"] >= 1 and again["reduced"] == 0 and again["hits"] == first["hits"]
    t = time.perf_counter()
    assert lib.search("Quellport harbour", 3)
    assert time.perf_counter() - t < library.SEARCH_BUDGET_S
    # a worker past its deadline is ended, in one line; the next request starts a new one
    library_zim.SEARCHER.close()
    with pytest.raises(KitError, match="searching the ZIM file did not finish within 0.001 s") as e:
        library_zim.SEARCHER.call(request, 1e-3)
    assert "\n" not in str(e.value)
    # a search past its budget answers from the rest, and says so once
    for _ in range(2):
        assert lib.search("Zorbia island", 3, budget=1e-6) == []
    err = capsys.readouterr().err
    assert err.count("warning: zims/wiki.zim: ") == 1 and "answered from the library's other passages" in err
    assert "Quellport" in lib.search("capital of Zorbia", 1)[0].text


def test_a_slow_zim_article_costs_one_question_its_share_and_no_more(home, tmp_path):
    """An article that takes seconds to reduce (7 MB of markup) beside a plain one: the search keeps
    its budget and finds the plain one; the slow article is passed over from then on."""
    folder = tmp_path / "zims"
    folder.mkdir()
    slow = "<p>Quellport harbour lantern, slowly.</p>" + "<p>x" * 1_750_000
    plain = "<p>The Quellport harbour lantern is lit at dusk.</p>"
    write_zim(folder / "wiki.zim", {"A/Plain": ("Plain", plain), "A/Slow": ("Slow", slow)}, fulltext=True)
    library_build.add("z", [folder], progress=False)
    lib = library.open_library("z")
    for budget in (2.0, 0.5):
        t = time.perf_counter()
        hits = lib.search("Quellport harbour lantern", 3, budget=budget)
        assert time.perf_counter() - t < budget + 0.5
        assert "zims/wiki.zim:A/Plain" in [h.source for h in hits]


@pytest.mark.parametrize("current", ["../../../victim", "VICTIM", "v1/../../../../victim", "v7", "link"])
def test_remove_deletes_only_the_librarys_own_folder(home, tmp_path, current):
    victim = tmp_path / "victim"  # home/libraries/t/../../../victim
    victim.mkdir()
    (victim / "keep.txt").write_text("not the library's")
    library_build.add("t", [docs(tmp_path / "docs")], progress=False)
    root = library.libraries_dir() / "t"
    os.symlink(victim, root / "link")
    (root / "current").write_text(str(victim) if current == "VICTIM" else current)
    with pytest.raises(KitError, match="is damaged"):
        library.Library("t")
    library.remove("t")
    assert (victim / "keep.txt").is_file() and not root.exists()
