"""Every number a user can give has its range (research.engine.options): each bound checked with the
value written out here, from the reason the module gives for it (llama.cpp's limits, a TCP port's
16 bits...), never read back from the module's own constants.
"""

import argparse
import math
import os

import pytest

from research.engine import options as o
from research.errors import KitError

CTX_MAX = 2**31 - 256  # llama.cpp pads contexts to 256 and numbers positions with int32
THREADS_MAX = min(4 * (os.cpu_count() or 1), 512)

#: (range, lowest allowed, just below it, highest allowed or None, just above it or None)
BOUNDS = {
    "CTX": (o.CTX, 64, 63, CTX_MAX, CTX_MAX + 1),
    "BATCH": (o.BATCH, 1, 0, CTX_MAX, CTX_MAX + 1),
    "THREADS": (o.THREADS, 1, 0, THREADS_MAX, THREADS_MAX + 1),
    "JOBS": (o.JOBS, 1, 0, THREADS_MAX, THREADS_MAX + 1),
    "TEMPERATURE": (o.TEMPERATURE, 0.0, -1e-9, 1e300, math.inf),
    "TOP_K": (o.TOP_K, 0, -1, 2**30, 2**30 + 1),
    "TOP_P": (o.TOP_P, 1e-9, 0.0, 1.0, 1.0000001),
    "MIN_P": (o.MIN_P, 0.0, -1e-9, 1.0, 1.0000001),
    "REPEAT_PENALTY": (o.REPEAT_PENALTY, 1e-9, 0.0, 1e300, math.inf),
    "MAX_TOKENS": (o.MAX_TOKENS, 1, 0, CTX_MAX, CTX_MAX + 1),
    "SEED": (o.SEED, 0, -1, 2**32 - 2, 2**32 - 1),  # 0xFFFFFFFF means "random" to llama.cpp
    "REPS": (o.REPS, 1, 0, 10**9, None),
    "PP": (o.PP, 1, 0, CTX_MAX, CTX_MAX + 1),
    "TG": (o.TG, 2, 1, CTX_MAX, CTX_MAX + 1),  # a decode speed needs two tokens
    "CHUNKS": (o.CHUNKS, 1, 0, 10**9, None),
    "LIMIT": (o.LIMIT, 1, 0, 10**9, None),
    "SAMPLES": (o.SAMPLES, 2, 1, 64, 65),
    "PROBABILITY": (o.PROBABILITY, 0.0, -1e-9, 1.0, 1.0000001),
    "FEWSHOT": (o.FEWSHOT, 0, -1, 64, 65),
    "UNLOAD_AFTER": (o.UNLOAD_AFTER, 0.0, -1e-9, 7 * 24 * 60.0, 7 * 24 * 60.0 + 1e-6),
    "IDLE_SECONDS": (o.IDLE_SECONDS, 5.0, 4.999, 3600.0, 3600.001),
    "PORT": (o.PORT, 1, 0, 65535, 65536),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_each_range_takes_its_bounds_and_nothing_past_them(name):
    r, lo, below, hi, above = BOUNDS[name]
    assert r.ok(lo) and r.ok(hi), name
    assert not r.ok(below), name
    if above is not None:
        assert not r.ok(above), name
    assert r.check(lo, name) == lo
    with pytest.raises(KitError):
        r.check(below, name)


def test_the_other_constants():
    assert o.RANDOM_SEED == -1 and o.BENCH_SLACK == 64 and o.THREADS_MAX == THREADS_MAX


@pytest.mark.parametrize(
    "r, text",
    [
        (o.CTX, "a whole number of tokens from 64 to 2147483392"),
        (o.TEMPERATURE, "a finite number of at least 0"),
        (o.TOP_P, "a number above 0 and at most 1"),
        (o.MIN_P, "a number from 0 to 1"),
        (o.REPEAT_PENALTY, "a finite number above 0"),
        (o.SAMPLES, "a whole number of answers from 2 to 64"),
        (o.PORT, "a whole number from 1 to 65535"),
        (o.UNLOAD_AFTER, "a number of minutes from 0 to 10080"),
        (o.IDLE_SECONDS, "a number of seconds from 5 to 3600"),
        (o.REPS, "a whole number of at least 1"),
        (o.LIMIT, "a whole number of questions of at least 1"),
        (o.Range(None, 5), "a whole number of at most 5"),
        (o.Range(None, None), "a whole number"),
        (o.Range(None, None, integer=False), "a finite number"),
        (o.Range(0.5, 2.5, integer=False), "a number from 0.5 to 2.5"),
        (o.Range(1, None, lo_open=True, unit="s"), "a whole number of s above 1"),
    ],
)
def test_describe(r, text):
    assert r.describe() == text


@pytest.mark.parametrize(
    "r, value, ok",
    [
        (o.CTX, True, False),  # a bool is not a number here
        (o.TOP_K, False, False),
        (o.CTX, 64.0, False),  # a whole number means an int
        (o.CTX, "64", False),
        (o.MIN_P, 1, True),  # an int is a number
        (o.MIN_P, True, False),
        (o.TEMPERATURE, math.nan, False),
        (o.REPEAT_PENALTY, math.inf, False),
        (o.TEMPERATURE, "0.5", False),
        (o.Range(None, None), 10**30, True),
        (o.Range(None, 5), -(10**30), True),
        (o.Range(None, 5), 6, False),
    ],
)
def test_ok_checks_the_kind_too(r, value, ok):
    assert r.ok(value) is ok


def test_check_says_what_and_why_in_one_line():
    with pytest.raises(KitError) as e:
        o.CTX.check(0, "n_ctx")
    assert str(e.value) == "n_ctx must be a whole number of tokens from 64 to 2147483392, not 0"
    with pytest.raises(KitError) as e:
        o.TOP_P.check(0.0, "top_p")
    assert str(e.value) == "top_p must be a number above 0 and at most 1, not 0.0"
    assert o.TOP_P.check(0.5, "top_p") == 0.5


def test_arg_parses_and_checks():
    assert o.CTX.arg("64") == 64 and type(o.CTX.arg("64")) is int
    assert o.MIN_P.arg("0.5") == 0.5 and type(o.MIN_P.arg("1")) is float
    assert o.context("2048") == 2048 and o.threads("1") == 1 and o.port("65535") == 65535
    for r, text, said in [
        (o.CTX, "63", "must be a whole number of tokens from 64 to 2147483392, not '63'"),
        (o.CTX, "1.5", "must be a whole number of tokens from 64 to 2147483392, not '1.5'"),
        (o.CTX, "lots", "must be a whole number of tokens from 64 to 2147483392, not 'lots'"),
        (o.TEMPERATURE, "nan", "must be a finite number of at least 0, not 'nan'"),
        (o.PORT, "0", "must be a whole number from 1 to 65535, not '0'"),
        (o.SAMPLES, "65", "must be a whole number of answers from 2 to 64, not '65'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            r.arg(text)
        assert str(e.value) == said
    with pytest.raises(argparse.ArgumentTypeError):
        o.port("65536")
    with pytest.raises(argparse.ArgumentTypeError):
        o.threads("0")
    with pytest.raises(argparse.ArgumentTypeError):
        o.context("0")


def test_kv_cache_types():
    assert o.check_kv_type("q8_0") == "q8_0"
    for bad in ("F16", "q5_0", 16, None):
        with pytest.raises(KitError) as e:
            o.check_kv_type(bad)
        assert str(e.value) == f"unknown KV-cache type {bad!r}; choose from: f32, f16, q8_0, q4_0"
    assert o.kv_types("f16,q8_0") == ["f16", "q8_0"]
    assert o.kv_types(" f16 , ,q4_0 ") == ["f16", "q4_0"]
    with pytest.raises(argparse.ArgumentTypeError) as e:
        o.kv_types(" , ")
    assert str(e.value) == "name at least one KV-cache type, like f16 or f16,q8_0, not ' , '"
    with pytest.raises(argparse.ArgumentTypeError) as e:
        o.kv_types("f16,xx")
    assert str(e.value) == "unknown KV-cache type 'xx'; choose from: f32, f16, q8_0, q4_0"


def test_threads_list():
    assert o.threads_list("1,2") == [1, 2] and o.threads_list(" 1 , 2 ") == [1, 2]
    for bad in ("0", "", "1,x", "1,,2", f"{THREADS_MAX + 1}"):
        with pytest.raises(argparse.ArgumentTypeError) as e:
            o.threads_list(bad)
        assert str(e.value) == f"must be thread counts from 1 to {THREADS_MAX}, like 1,2,4, not {bad!r}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def type_error(fn, text) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        fn(text)
    return str(e.value)


def test_input_file(home, monkeypatch):
    (home / "q.jsonl").write_text("{}")
    (home / "dir").mkdir()
    os.mkfifo(home / "pipe")
    assert o.input_file(str(home / "q.jsonl")) == str(home / "q.jsonl")
    assert o.input_file("~/q.jsonl") == "~/q.jsonl"  # the user's folder expanded, the text kept
    assert type_error(o.input_file, "~/dir") == "~/dir is a folder; name a file inside it"
    assert type_error(o.input_file, "~/none") == "no such file: ~/none"
    assert (
        type_error(o.input_file, "~/pipe") == "~/pipe is not a regular file (a pipe or a device); name a file"
    )
    asked = []

    def no_access(path, mode):
        asked.append(mode)
        return False

    monkeypatch.setattr(os, "access", no_access)
    assert type_error(o.input_file, "~/q.jsonl") == "cannot read ~/q.jsonl: permission denied"
    assert asked == [os.R_OK]


def test_questions_file(home):
    assert o.questions_file("hf:nq_open") == "hf:nq_open"  # a dataset, not a file
    assert o.questions_file("data/*.jsonl") == "data/*.jsonl"  # a glob, expanded later
    assert type_error(o.questions_file, "~/none.jsonl") == "no such file: ~/none.jsonl"


def test_folder(home):
    (home / "f").write_text("x")
    assert o.folder("~") == "~" and o.folder(str(home)) == str(home)
    with pytest.raises(KitError) as e:
        o.folder("~/none")
    assert str(e.value) == "no such folder: ~/none"
    with pytest.raises(KitError) as e:
        o.folder("~/f")
    assert str(e.value) == "~/f is a file, not a folder"


def test_output_file(home, monkeypatch):
    (home / "old.json").write_text("{}")
    (home / "file").write_text("x")
    assert o.output_file("~/old.json") == "~/old.json"
    assert o.output_file("~/new/deeper/out.json") == "~/new/deeper/out.json"  # folders made later
    assert type_error(o.output_file, "  ") == "name a file"
    assert type_error(o.output_file, "~") == f"~ is a folder; name a file inside it (e.g. {home / 'out'})"
    assert (
        type_error(o.output_file, "~/file/out.json")
        == f"cannot write ~/file/out.json: {home / 'file'} is a file, not a folder"
    )
    asked = []

    def no_access(path, mode):
        asked.append((str(path), mode))
        return False

    monkeypatch.setattr(os, "access", no_access)
    assert type_error(o.output_file, "~/old.json") == "cannot write ~/old.json: permission denied"
    assert type_error(o.output_file, "~/a/b.json") == f"cannot write ~/a/b.json: {home} is not writable"
    assert asked == [(str(home / "old.json"), os.W_OK), (str(home), os.W_OK | os.X_OK)]


def test_a_usage_error_is_one_line_naming_the_help(capsys):
    parser = o.Parser(prog="research chat")
    parser.add_argument("--ctx", type=o.context)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--ctx", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "error: argument --ctx: must be a whole number of tokens from 64 to 2147483392, not '1' "
        "(see: research chat --help)\n"
    )
    with pytest.raises(SystemExit):
        parser.error("two\n  lines")
    assert capsys.readouterr().err == "error: two lines (see: research chat --help)\n"


def test_a_bound_as_said():
    assert (o._show(None), o._show(5), o._show(2.5), o._show(10080.0), o._show(1e-9)) == (
        "",
        "5",
        "2.5",
        "10080",
        "1e-09",
    )
