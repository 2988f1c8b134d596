"""The page's logic without a browser: answers keep what produced them, text stays text."""

import json

import pytest
from fakes import FakeBackend
from hypothesis import given, settings
from hypothesis import strategies as st

from research.engine import Engine, Sampling
from research.engine.prompts import STOPS, ChatFormat
from research.errors import KitError
from research.page import host as chat
from research.page import text as page_text
from research.ratings import store as ratings

CHATML = ChatFormat("chatml", stops=STOPS["chatml"])
GREEDY = Sampling(temperature=0, max_tokens=32, seed=1)


def engine(name, answers=("Paris.",)):
    e = Engine(FakeBackend(list(answers)), CHATML, name)
    e.__dict__["sha256"] = name * 4  # a stand-in file hash per model (cached_property's slot)
    return e


def ask(host, question, history=(), system="Be brief.", sampling=GREEDY, session="s1"):
    history = list(history) + [{"role": "user", "content": page_text.shown(question)}]
    *_, last = host.respond(history, system, sampling, session)
    return last


def test_a_rating_names_the_model_that_answered_not_the_one_loaded_now(tmp_path):
    host = chat.ModelHost()
    host.engine = engine("model-a", ["Paris."])
    history = ask(host, "Capital of France?", sampling=Sampling(temperature=0, max_tokens=32, seed=7))
    # Another session loads another model, and the sliders move, before this one rates.
    host.engine = engine("model-b", ["Lyon."])
    other = ask(host, "Capital of France?", session="s2", sampling=Sampling(temperature=1.3, seed=9))
    path = tmp_path / "r.jsonl"
    host.rate(history, thumbs="up", path=path)
    host.rate(other, thumbs="down", path=path)
    got, bad = ratings.read(path)
    assert bad == 0
    assert [(r["model"], r["model_sha256"], r["answer"], r["thumbs"]) for r in got] == [
        ("model-a", "model-a" * 4, "Paris.", "up"),
        ("model-b", "model-b" * 4, "Lyon.", "down"),
    ]
    assert got[0]["settings"]["temperature"] == 0 and got[0]["settings"]["seed"] == 7
    assert got[1]["settings"]["temperature"] == 1.3
    assert got[0]["system"] == "Be brief." and got[0]["prompt_format"] == "chatml"
    assert got[0]["answer_id"] != got[1]["answer_id"] and got[0]["run"] != got[1]["run"]


def test_rating_by_index_picks_that_answer(tmp_path):
    host = chat.ModelHost()
    host.engine = engine("model-a", ["One.", "Two."])
    history = ask(host, "First?")
    host.engine = engine("model-b", ["Three."])
    history = ask(host, "Second?", history)
    path = tmp_path / "r.jsonl"
    host.rate(history, 1, score=4, path=path)  # the first answer, by its place in the conversation
    host.rate(history, score=2, path=path)  # default: the last answer
    got, _ = ratings.read(path)
    assert [(r["question"], r["answer"], r["model"]) for r in got] == [
        ("First?", "One.", "model-a"),
        ("Second?", "Three.", "model-b"),
    ]


def test_edited_or_unknown_answers_are_not_attributed_to_a_model(tmp_path):
    host = chat.ModelHost()
    host.engine = engine("model-a")
    history = ask(host, "Capital?")
    edited = [dict(m) for m in history]
    edited[-1]["content"] = "Berlin, says the user."
    with pytest.raises(KitError, match="edited"):
        host.rate(edited, thumbs="up", path=tmp_path / "r.jsonl")
    restarted = chat.ModelHost()  # a new page process knows none of the old answers
    restarted.engine = engine("model-a")
    with pytest.raises(KitError, match="does not know which model"):
        restarted.rate(history, thumbs="up", path=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()


def test_export_names_each_answers_model(tmp_path):
    host = chat.ModelHost()
    host.engine = engine("model-a", ["One."])
    history = ask(host, "First?")
    host.engine = engine("model-b", ["Two."])
    history = ask(host, "Second <b>bold</b>?", history)
    md, js = host.export(history, "Be brief.", tmp_path / "out")
    doc = json.loads(js.read_text())
    assert [m.get("provenance", {}).get("model") for m in doc["messages"]] == [
        None,
        "model-a",
        None,
        "model-b",
    ]
    assert doc["messages"][2]["content"] == "Second <b>bold</b>?"  # as typed, not as shown
    assert "Model (model-a):** One." in md.read_text() and "Model (model-b):** Two." in md.read_text()
    assert (tmp_path / "out").stat().st_mode & 0o077 == 0  # private


def test_hostile_answer_is_shown_as_text_and_sent_back_as_it_was():
    hostile = 'Here: <img src="http://evil.example/x.png"> ![a](http://evil.example/y.png) `<b>code</b>`'
    host = chat.ModelHost()
    host.engine = engine("model-a", [hostile])
    history = ask(
        host, "<script>alert(1)</script> & ![q](http://evil.example/q)", sampling=Sampling(max_tokens=200)
    )
    shown_answer = chat.text_of(history[-1]["content"])
    assert "<img" not in shown_answer and "![" not in shown_answer and "&lt;img" in shown_answer
    assert "\\`&lt;b>code&lt;/b>\\`" in shown_answer  # inline code: text, its backticks shown
    assert "<script" not in chat.text_of(history[0]["content"])
    msgs = chat.history_messages(history)
    assert msgs[0]["content"] == "<script>alert(1)</script> & ![q](http://evil.example/q)"
    assert msgs[1]["content"] == hostile  # figures line removed, text as the model gave it


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(list("ab<>&![]()`~\n #;3\\") + ["```", "&#33;", "&lt;", "&amp;"])).map("".join)
)
def test_shown_text_comes_back_exactly(text):
    assert page_text.plain(page_text.shown(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "<img src=http://e/x>",
        "<IMG SRC=http://e/x>",
        "<svg onload=fetch('http://e')>",
        "<a href=http://e>x</a>",
        "![x](http://e/y)",
        "![x][ref]\n\n[ref]: http://e/y",
        "<link rel=prefetch href=http://e>",
        "<meta http-equiv=refresh content='0;url=http://e'>",
        "`unclosed <img src=http://e/x>",
        "``<img src=http://e/x>`",
        "<iframe src=http://e>",
        "<video src=http://e/v>",
        "<object data=http://e>",
        "<style>@import 'http://e/x.css'</style>",
        "<!--><img src=http://e/x>-->",
    ],
)
def test_no_tag_or_image_survives(text):
    """Judged by two Markdown parsers that are not the kit's (tests/test_page_text.py)."""
    from test_page_text import assert_inert

    assert_inert(text)


def test_page_opens_models_only_from_allowed_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "mine").mkdir()
    host = chat.ModelHost(folders=[tmp_path / "mine"])
    for name in ("/etc/passwd", str(tmp_path / "elsewhere.gguf"), str(tmp_path / "mine" / ".." / "x.gguf")):
        with pytest.raises(KitError, match="opens model files only from"):
            host.switch(name)
    link = tmp_path / "mine" / "link.gguf"
    link.symlink_to("/etc/passwd")  # a link inside an allowed folder to a file outside it
    with pytest.raises(KitError, match="opens model files only from"):
        host.switch(str(link))
    (tmp_path / "mine" / "bad.gguf").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(KitError) as e:
        host.switch(str(tmp_path / "mine" / "bad.gguf"))  # allowed folder: read, and refused
    assert "root:" not in str(e.value) and "not a GGUF file" in str(e.value)
    host.check_allowed("smollm2-135m-q4_1")  # catalog ids are always fine


def test_sampling_from_the_page_is_checked():
    with pytest.raises(KitError):
        chat.sampling_from("hot", 40, 0.95, 0.05, 1.1, 64, -1)
    s = chat.sampling_from(0, 40, 0.95, 0.05, 1.1, 64, -1)
    assert s.seed is None and s.temperature == 0


def test_the_page_updates_less_often_as_an_answer_grows_and_at_least_once_a_second():
    from research.page.messages import STREAM_INTERVAL_S, STREAM_MAX_INTERVAL_S, stream_interval

    lengths = [0, 500, 2000, 3000, 4000, 8000, 20_000]
    got = [stream_interval(n) for n in lengths]
    assert got[0] == got[1] == got[2] == STREAM_INTERVAL_S
    assert got == sorted(got) and got[3] > STREAM_INTERVAL_S
    assert got[-1] == STREAM_MAX_INTERVAL_S == 1.0


def test_the_page_calls_llama_cpp_from_one_thread_whichever_thread_asks(monkeypatch):
    """OpenMP: a second thread calling llama.cpp beside the first halves its speed (ModelHost's
    doc), and Gradio answers on whichever worker thread is free. Loads, answers and closes all
    run on the host's one llama.cpp thread; its errors still reach the asker."""
    import threading

    from research.engine import Engine

    seen = []
    real_stream = Engine.stream

    def stream(self, *args, **kwargs):
        seen.append(("stream", threading.get_ident()))
        yield from real_stream(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "stream", stream)
    monkeypatch.setattr(
        Engine, "load", classmethod(lambda cls, *a: seen.append(("load", threading.get_ident())) or fake)
    )
    fake = engine("model-a", ["Paris."] * 4)
    host = chat.ModelHost("model-a")
    askers = [
        threading.Thread(target=ask, args=(host, f"Capital {i}?"), kwargs={"session": f"s{i}"})
        for i in range(3)
    ]
    for t in askers:
        t.start()
        t.join()
    assert [k for k, _ in seen] == ["load", "stream", "stream", "stream"]
    assert len({tid for _, tid in seen}) == 1 and seen[0][1] not in {t.ident for t in askers}
    with pytest.raises(KitError, match="empty question"):
        list(host.respond([{"role": "user", "content": " "}], "", GREEDY, "s9"))
    # An answer nobody reads to the end is stopped, and the llama.cpp thread is free again.
    unread = host.respond([{"role": "user", "content": "Again?"}], "", GREEDY, "s8")
    assert next(unread)[-1]["role"] == "assistant"
    unread.close()
    assert "Paris." in ask(host, "And again?")[-1]["content"]


def test_answer_only_when_sure_says_it_is_answering_and_shows_no_words_before_the_verdict():
    host = chat.ModelHost()
    host.engine = engine("model-a", ["Canberra is the capital."])
    host.answer_only_when_sure("s1", True)
    history = [{"role": "user", "content": "Capital of Australia?"}]
    steps = [m[-1]["content"] for m in host.respond(history, "", GREEDY, "s1")]
    assert steps[0] == chat.CHECKING and all(s == chat.CHECKING for s in steps[:-1])
    assert "◷" in steps[-1] and "Canberra" not in "".join(steps[:-1])
