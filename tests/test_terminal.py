"""What the kit prints from a model or a file reaches no terminal as a command: escape sequences
(a title, the clipboard through OSC 52, a cleared screen), C1 controls and bidirectional overrides
in an answer or a GGUF's metadata are printed as inert text, by every path that prints them."""

import json
import re
from types import SimpleNamespace

import pytest
from fakes import FakeBackend

from research.cli import commands
from research.engine import Engine
from research.engine.prompts import STOPS, ChatFormat

HOSTILE = "Paris \x1b]0;PWNED\x07\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\x9b31m\u202eevil\u202c done"
#: What may not reach a terminal raw: C0 controls but newline and tab, DEL, C1, bidi controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def fake_engine(_args):
    info = SimpleNamespace(file_type_name="Q4_0", file_size=1)
    chatml = ChatFormat("chatml", stops=STOPS["chatml"])
    e = Engine(FakeBackend([HOSTILE] * 8, n_ctx=4096), chatml, "fake", info)
    e.__dict__["sha256"] = "0" * 64
    e.warning = "the template failed: \x1b[2J"
    return e


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", "--prompt", "capital of France?"],
        ["chat", "--prompt", "q", "--abstain-below", "0.99"],
        ["chat", "--prompt", "q", "--abstain-below", "0.0"],
        ["chat", "--prompt", "q", "--json"],
    ],
)
def test_an_answer_reaches_the_terminal_as_text(argv, monkeypatch, capsys):
    monkeypatch.setattr(commands, "engine_from", fake_engine)
    assert commands.main(argv) == 0
    out, err = capsys.readouterr()
    assert RAW.findall(out + err) == [], (out, err)
    assert "Paris" in out + err and "PWNED" in out + err  # the text is there, inert
    if "--json" in argv:
        assert json.loads(out)["answer"] == HOSTILE  # the data itself is unchanged


def test_the_interactive_chat_prints_answers_as_text(monkeypatch, capsys):
    monkeypatch.setattr(commands, "engine_from", fake_engine)
    lines = iter(["q", "/show", ""])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    assert commands.main(["chat", "--abstain-below", "0.99"]) == 0
    out, err = capsys.readouterr()
    assert RAW.findall(out + err) == [] and "PWNED" in out


def test_a_gguf_s_metadata_reaches_the_terminal_as_text(tmp_path, capsys):
    import gguf
    import numpy as np

    path = tmp_path / "evil.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Evil \x1b]0;PWNED\x07\x1b]52;c;cm0g\x07\x1b[2J\u202emodel")
    w.add_context_length(64)
    w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for argv in (["inspect", str(path)], ["inspect", str(path), "--json"]):
        assert commands.main(argv) == 0
        out, err = capsys.readouterr()
        assert RAW.findall(out + err) == [] and "PWNED" in out, (argv, out)


def test_an_error_naming_a_hostile_path_reaches_the_terminal_as_text(tmp_path, capsys):
    assert commands.main(["inspect", str(tmp_path / "no\x1b]0;PWNED\x07.gguf")]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and RAW.findall(err) == [], err
