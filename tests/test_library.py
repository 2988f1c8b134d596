"""The offline library: reading formats, hostile files, incremental indexing, ZIM files, the CLI.

No model: retrieval and reading only (tests/test_grounded.py answers from libraries).
"""

import json
import sys
import zlib
from pathlib import Path

import pytest
from library_fixtures import minimal_pdf, orchard_pdf, write_zim

from research import files as library_files
from research.cli.commands import main
from research.errors import KitError
from research.evaluation.run import load_questions, score
from research.library import build as library_build
from research.library import sources as src
from research.library import store as library

DATA = Path(__file__).resolve().parents[1] / "data" / "library"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private user data folder: libraries are made there, never in ~/.local/share."""
    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path / "home"))
    library._OPEN.clear()
    yield tmp_path / "home"
    library._OPEN.clear()


def docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ferry.txt").write_text(
        "Ferry report\n\nThe newest ferry is the Marigold Dawn, launched in 2023.\n\nFares rose by 2 crowns."
    )
    (folder / "notes.md").write_text(
        "# Council notes\n\n## Bridge\n\nThe new footbridge will be called the **Linnet Bridge**. "
        "![beacon](http://evil.example/b.png) See [plans](http://evil.example/p).\n\n"
        "<script>\nstealCookies()\n</script>\n\n## Festival\n\nThe Lantern Festival is on 12 September.\n"
    )
    (folder / "birds.html").write_text(
        "<html><head><title>Warbler notes</title><style>p { color: red }</style>"
        "<script>document.write('evil')</script></head><body><h1>Warbler</h1>"
        "<p>The ember-crested warbler lays 3 pale green eggs.<img src='http://evil.example/x.png'></p>"
        "<iframe src='http://evil.example'>frame text</iframe></body></html>"
    )
    (folder / "orchard.pdf").write_bytes(minimal_pdf(["The main apple variety is Copper Queen."], "Orchard"))
    (folder / "image.png").write_bytes(b"\x89PNG\r\n")  # not a kind the library reads: passed over
    return folder


# ---- reading ----


def test_html_is_reduced_to_its_words():
    title, blocks = src.html_to_blocks(
        "<title>T</title><h1>A</h1><p>x &amp; y <img src=http://h/i.png> <script>bad()</script></p>"
        "<style>p{}</style><p>z</p><iframe>frame words</iframe><noscript>tracking pixel</noscript>"
    )
    assert title == "T"
    assert blocks == [("A", "x & y"), ("A", "z")]


def test_markdown_loses_images_links_and_raw_html():
    title, blocks = src.markdown_to_blocks(
        "# T\n\nSee ![alt](http://h/i.png) and [text](http://h/) <b>bold</b> *em* 2*3*4.\n\n"
        "<script>\nsteal()\n</script>\n## S\n\nmore"
    )
    assert title == "T"
    text = " ".join(t for _, t in blocks)
    assert "http" not in text and "<" not in text and "steal" not in text
    assert blocks[0] == ("T", "See alt and text bold em 2*3*4.")
    assert blocks[-1] == ("S", "more")


def test_passages_stay_within_the_size_and_their_section():
    doc = src.Document("T", [("A", "x " * 400), ("A", "short"), ("B", "other section")])
    out = src.passages(doc, max_chars=120)
    assert all(len(text) <= 120 for _, text in out)
    assert [s for s, _ in out][-1] == "B" and out[-1][1] == "other section"
    assert sum(t.count("x") for _, t in out) == 400  # nothing lost


def test_a_word_longer_than_a_passage_is_cut():
    out = src.passages(src.Document("T", [("", "y" * 1000)]), max_chars=300)
    assert [len(t) for _, t in out] == [300, 300, 300, 100]


def test_pdf_text_comes_from_a_child_process(tmp_path):
    path = tmp_path / "a.pdf"
    path.write_bytes(minimal_pdf(["First paragraph here.", "Second (with parentheses) one."], "My title"))
    doc = src.read(path)
    assert doc.title == "My title"
    assert "Second (with parentheses) one." in " ".join(t for _, t in doc.blocks)


def test_the_committed_pdf_is_made_by_the_fixture():
    """data/library/README.md says how the PDF was made: this keeps that true."""
    assert (DATA / "docs" / "tamsin_orchard_report.pdf").read_bytes() == orchard_pdf()


# ---- hostile and broken files: one line each, never the end ----


def test_a_pdf_that_hangs_is_stopped(tmp_path):
    path = tmp_path / "slow.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    with pytest.raises(src.SourceError, match="did not finish within 2 s"):
        src.read_pdf(path, timeout=2, cmd=[sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_pdf_that_crashes_its_reader_is_one_line(tmp_path):
    path = tmp_path / "crash.pdf"
    path.write_bytes(b"%PDF-1.4\n")
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(src.SourceError, match="crashed") as e:
        src.read_pdf(path, cmd=crash)
    assert "\n" not in str(e.value)


def test_a_decompression_bomb_is_refused(tmp_path):
    """A 1 GB page of zeros in a ~1 MB file: the child's memory bound or pypdf's own stops it."""
    comp = zlib.compressobj(9)
    chunk = b"0" * (1 << 20)
    stream = b"".join(comp.compress(chunk) for _ in range(1024)) + comp.flush()
    pdf = minimal_pdf(["x"])
    start = pdf.index(b"stream\n") + len(b"stream\n")
    end = pdf.index(b"\nendstream")
    length = pdf[:start].rsplit(b"/Length ", 1)[1].split(b" ", 1)[0]
    head = pdf[:start].replace(b"/Length " + length, b"/Length " + str(len(stream)).encode())
    path = tmp_path / "bomb.pdf"
    path.write_bytes(head + stream + pdf[end:])  # the xref offsets are off: pypdf rebuilds them
    with pytest.raises(src.SourceError) as e:
        src.read(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("garbage.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
        ("empty.pdf", b"", "not a readable PDF"),
        ("binary.txt", b"\x00\x01\x02" * 100, "binary"),
        ("broken.zim", b"ZIM\x04" + b"\x00" * 100, "ZIM"),
    ],
)
def test_broken_files_are_skipped_with_one_line(home, tmp_path, capsys, name, content, why):
    folder = docs(tmp_path / "docs")
    (folder / name).write_bytes(content)
    report = library_build.add("t", [folder], progress=False)
    assert [p for p, _ in report.skipped] == [str(folder / name)]
    assert why in report.skipped[0][1]
    err = capsys.readouterr().err
    assert f"skipped {folder / name}:" in err and err.count("\n") == 1
    assert report.files == 4  # the four good documents are all there
    assert library.open_library("t").search("Marigold Dawn ferry", 1)


def test_a_huge_text_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(src, "MAX_TEXT_MB", 1)
    path = tmp_path / "huge.txt"
    path.write_bytes(b"a " * (1 << 20))
    with pytest.raises(src.SourceError, match="more than the 1 MB"):
        src.read(path)


# ---- the library ----


def test_add_search_and_read_a_passage(home, tmp_path):
    folder = docs(tmp_path / "docs")
    report = library_build.add("t", [folder], progress=False)
    assert (report.files, report.read, report.kept, report.skipped) == (4, 4, 0, [])
    lib = library.open_library("t")
    assert lib.dir.parent == home / "libraries" / "t"  # the user's data folder, not the checkout
    for question, answer, name in [
        ("What is the newest ferry?", "Marigold Dawn", "ferry.txt"),
        ("What will the footbridge be called?", "Linnet Bridge", "notes.md"),
        ("How many eggs does the ember-crested warbler lay?", "3 pale green eggs", "birds.html"),
        ("What is the main apple variety?", "Copper Queen", "orchard.pdf"),
    ]:
        hit = lib.search(question, 1)[0]
        assert answer in hit.text and hit.source.endswith(name)
        assert lib.passage(hit.id).text == hit.text
    html = lib.search("ember-crested warbler eggs", 1)[0]
    assert html.title == "Warbler notes › Warbler"
    everything = " ".join(lib.stored(n)["x"] for n in range(lib.manifest["passages"]))
    assert "evil" not in everything and "stealCookies" not in everything and "<" not in everything


def test_indexing_is_incremental_and_each_version_replaces_the_last(home, tmp_path, monkeypatch):
    folder = docs(tmp_path / "docs")
    library_build.add("t", [folder], progress=False)
    old = library.open_library("t").search("Marigold Dawn", 1)[0]
    reads = []
    real = src.read
    monkeypatch.setattr(src, "read", lambda p, *a: reads.append(p.name) or real(p, *a))
    (folder / "ferry.txt").write_text("The newest ferry is now the Saint Corentin.")
    (folder / "extra.txt").write_text("A new file about the Kell Hill telescope.")
    report = library_build.update("t", progress=False)
    assert sorted(reads) == ["extra.txt", "ferry.txt"]  # the three unchanged files were not read
    assert (report.read, report.kept, report.version) == (2, 3, 2)
    lib = library.open_library("t")
    assert "Saint Corentin" in lib.search("newest ferry", 1)[0].text
    assert "Copper Queen" in lib.search("apple variety", 1)[0].text  # kept passages still found
    assert sorted(p.name for p in lib.root.iterdir() if p.is_dir()) == ["v2"]
    with pytest.raises(KitError, match="updated since"):
        lib.passage(old.id)
    with pytest.raises(KitError, match="has no passage 9-1 \\(it is at version 2\\)"):
        lib.passage("9-1")  # from a version it never had: not "updated since"
    (folder / "extra.txt").unlink()
    assert library_build.update("t", progress=False).files == 4  # a deleted file leaves the library


def test_a_library_with_nothing_to_search_is_refused_and_an_update_to_nothing_changes_nothing(
    home, tmp_path, monkeypatch
):
    only_images = tmp_path / "images"
    only_images.mkdir()
    (only_images / "a.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(KitError, match="would hold no text to search .*nothing was made"):
        library_build.add("empty", [only_images], progress=False)
    assert "empty" not in library.names()

    folder = docs(tmp_path / "docs")
    library_build.add("t", [folder], progress=False)
    # the folder can no longer be listed (an unmounted drive, its permissions changed): as root
    # here, permissions would not stop the walk, so os.walk reports the error as it would
    real_walk = library_files.os.walk

    def walk(top, onerror=None, **kw):
        if Path(top) == folder:
            onerror(PermissionError(13, "Permission denied", str(folder)))
            return iter(())
        return real_walk(top, onerror=onerror, **kw)

    monkeypatch.setattr(library_files.os, "walk", walk)
    with pytest.raises(KitError, match=f"{folder}: Permission denied\\); the library is unchanged"):
        library_build.update("t", progress=False)
    assert "Marigold Dawn" in library.open_library("t").search("newest ferry", 1)[0].text


def test_a_failed_update_leaves_the_previous_version_whole(home, tmp_path, monkeypatch):
    folder = docs(tmp_path / "docs")
    library_build.add("t", [folder], progress=False)
    (folder / "ferry.txt").write_text("Changed text about the Saint Corentin.")

    def boom(*a, **k):
        raise RuntimeError("killed while indexing")

    monkeypatch.setattr(library_build, "tokenize", boom)
    with pytest.raises(RuntimeError):
        library_build.update("t", progress=False)
    library._OPEN.clear()
    lib = library.open_library("t")
    assert lib.version == 1 and "Marigold Dawn" in lib.search("newest ferry", 1)[0].text


def test_zim_with_its_own_full_text_index_is_searched_not_indexed(home, tmp_path):
    articles = {
        "A/Zorbia": ("Zorbia", "<html><body><h1>Zorbia</h1><p>Zorbia is an island. Its capital is "
                     "Quellport, founded in 1712.</p><script>alert(1)</script></body></html>"),
        "A/Mars": ("Mars", "<html><body><p>Mars is the fourth planet from the Sun.</p></body></html>"),
    }  # fmt: skip
    folder = tmp_path / "zims"
    folder.mkdir()
    write_zim(folder / "wiki.zim", articles, fulltext=True)
    write_zim(
        folder / "plain.zim", {"A/Kell": ("Kell", "<p>Kell Hill has a 61-centimetre telescope.</p>")}, False
    )
    report = library_build.add("w", [folder], progress=False)
    assert report.skipped == [] and report.files == 2
    lib = library.open_library("w")
    full = next(f for f in lib.files if f["path"].endswith("wiki.zim"))
    assert full["fulltext"] and full["count"] == 0  # nothing stored: libzim's index is used
    hit = lib.search("What is the capital of Zorbia?", 1)[0]
    assert "Quellport" in hit.text and "alert" not in hit.text
    assert hit.source.endswith("wiki.zim:A/Zorbia") and "-z" in hit.id
    assert lib.passage(hit.id).text == hit.text
    plain = lib.search("Kell telescope", 1)[0]
    assert "61-centimetre" in plain.text and "-z" not in plain.id  # indexed with bm25s


def test_passage_ids_and_names_are_checked(home, tmp_path):
    library_build.add("t", [docs(tmp_path / "d")], progress=False)
    lib = library.open_library("t")
    for bad in ["../x", "1-9999", "1-z9-0-1", "x", "", "1-0/../../etc"]:
        with pytest.raises(KitError):
            lib.passage(bad)
    for bad in ["..", "a/b", "", "-x", "a" * 65]:
        with pytest.raises(KitError):
            library.check_name(bad)


def test_the_question_set_is_answerable_from_its_documents():
    """Each reference answer is in its document's text (a set the library can answer)."""
    rows = [json.loads(line) for line in (DATA / "questions.jsonl").open()]
    assert len(rows) >= 60 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        doc = src.read(DATA / "docs" / r["document"])
        assert score(" ".join(t for _, t in doc.blocks), [r["answer"], *r["aliases"]])["contains"], r["id"]


def test_retrieval_finds_the_answer_of_the_kit_set(home):
    library_build.add("kit", [DATA / "docs"], progress=False)
    lib = library.open_library("kit")
    questions = load_questions(str(DATA / "questions.jsonl"))
    found = sum(
        any(score(h.text, q["references"])["contains"] for h in lib.search(q["question"], 3))
        for q in questions
    )
    assert found / len(questions) >= 0.9


# ---- the command line ----


def test_cli_add_list_search_show_remove(home, tmp_path, capsys):
    folder = docs(tmp_path / "docs")
    assert main(["library", "add", str(folder), "--name", "mine", "--quiet"]) == 0
    assert "4 files" in capsys.readouterr().out
    assert main(["library", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["files"], r["skipped"]) for r in rows] == [("mine", 4, 0)]
    assert main(["library", "search", "mine", "newest ferry", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert "Marigold Dawn" in hits[0]["text"]
    assert main(["library", "show", "mine", hits[0]["id"]]) == 0
    assert "Marigold Dawn" in capsys.readouterr().out
    assert main(["library", "remove", "mine"]) == 0
    assert folder.joinpath("ferry.txt").exists()  # the documents stay
    assert main(["library", "search", "mine", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no library named 'mine'") and err.count("\n") == 1


def test_cli_refuses_bad_input_in_one_line(home, tmp_path, capsys):
    assert main(["library", "add", str(tmp_path / "missing"), "--name", "x"]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["library", "search", "../etc", "q"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert main(["chat", "--lookup", "always", "--prompt", "hi"]) == 1
    assert "--library" in capsys.readouterr().err


def test_bench_reports_its_figures(home):
    """Not timed: the figures are printed by `library bench`; this checks they are all there."""
    from research.library import bench as library_bench

    r = library_bench.bench(n_passages=1000, queries=5, progress=False)
    assert r["passages"] == 1000 and r["found"] == 5
    assert r["median_ms"] > 0 and r["index_mb"] > 0 and r["rss_mb"] > 0
    assert "bench-1000" not in library.names()  # removed unless --keep
    assert "median" in library_bench.format_bench(r)
