"""The chat page, launched for real on the bundled model and driven through gradio_client."""

import json
import threading
import urllib.error
import urllib.request

import psutil
import pytest
from gradio_client import Client

pytestmark = [pytest.mark.page, pytest.mark.model]

GREEDY = dict(
    system="Answer briefly.", temperature=0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=1
)


def ask_args(question, history=(), max_tokens=48, **kw):
    s = GREEDY | kw
    return (
        question,
        list(history),
        s["system"],
        s["temperature"],
        s["top_k"],
        s["top_p"],
        s["min_p"],
        s["repeat_penalty"],
        max_tokens,
        s["seed"],
    )


def text(message):
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


@pytest.fixture()
def client(page):
    return Client(page.url, verbose=False)


def test_question_gets_a_streamed_answer_with_figures(client):
    job = client.submit(*ask_args("Write a story about a dragon.", max_tokens=128), api_name="/ask")
    updates = [out for out in job]
    history, box = job.result()
    assert box == ""
    assert len(updates) >= 5  # streamed in pieces (at most one update every 50 ms), not at once
    assert [m["role"] for m in history] == ["user", "assistant"]
    answer = text(history[-1])
    assert "◷" in answer and "t/s" in answer and "MB" in answer  # the answer's figures
    assert len(answer.split("\n\n<sub>")[0].strip()) > 0


def test_rating_lands_in_the_ratings_file(client, page):
    history, _ = client.predict(*ask_args("Name a planet."), api_name="/ask")
    before = page.ratings.read_text().count("\n") if page.ratings.exists() else 0
    status = client.predict(
        history, 2, "wrong", "checked by a test", 0, 40, 0.95, 0.05, 1.1, 48, 1, api_name="/rate"
    )
    assert "Saved" in status
    lines = page.ratings.read_text().splitlines()
    assert len(lines) == before + 1
    rec = json.loads(lines[-1])
    assert rec["question"] == "Name a planet." and rec["score"] == 2 and rec["verdict"] == "wrong"
    assert rec["answer"] and "◷" not in rec["answer"]  # the figures line is not part of the answer
    assert rec["model"] == "smollm2-135m-q4_1" and len(rec["model_sha256"]) == 64
    assert rec["settings"]["temperature"] == 0


def test_empty_question_is_a_visible_message_and_the_page_keeps_serving(client):
    with pytest.raises(Exception, match="empty question"):
        client.predict(*ask_args("   "), api_name="/ask")
    history, _ = client.predict(*ask_args("Say hello."), api_name="/ask")
    assert text(history[-1])


def test_bad_model_is_refused_and_the_old_one_keeps_answering(client, tmp_path):
    fake = tmp_path / "page.gguf"
    fake.write_text("<!DOCTYPE html><html>not a model</html>")
    with pytest.raises(Exception, match="HTML|not a GGUF"):
        client.predict("smollm2-135m-q4_1", str(fake), api_name="/load_model")
    with pytest.raises(Exception, match="no such file"):
        client.predict("smollm2-135m-q4_1", "/nonexistent/model.gguf", api_name="/load_model")
    history, _ = client.predict(*ask_args("What is 2 + 2?"), api_name="/ask")
    assert text(history[-1])


def test_stop_cancels_the_running_answer(client):
    job = client.submit(
        *ask_args("Write a very long story about a dragon.", max_tokens=2000, temperature=0.8),
        api_name="/ask",
    )
    for _ in job:  # wait until the answer is streaming
        if len(job.outputs()) > 3:
            break
    client.predict(api_name="/stop")
    history, _ = job.result(timeout=60)
    answer = text(history[-1])
    assert "cancelled" in answer
    assert int(answer.split(" tokens at ")[0].split("·")[-1]) < 2000


def test_concurrent_sessions_both_complete_unmixed(page):
    results = {}

    def run(name, question):
        c = Client(page.url, verbose=False)
        history, _ = c.predict(*ask_args(question, max_tokens=32), api_name="/ask")
        results[name] = history

    threads = [
        threading.Thread(target=run, args=(n, q))
        for n, q in (("a", "What color is the sky?"), ("b", "How many legs does a spider have?"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(results) == {"a", "b"}
    assert text(results["a"][0]) == "What color is the sky?" and len(results["a"]) == 2
    assert text(results["b"][0]) == "How many legs does a spider have?" and len(results["b"]) == 2


def test_listens_on_loopback_only(page):
    conns = [
        c for c in psutil.Process(page.proc.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN
    ]
    assert conns, "the page should be listening"
    assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in conns), conns


@pytest.mark.parametrize(
    "headers", [{"Host": "evil.example"}, {"Origin": "http://evil.example"}, {"Host": "attacker.com:7860"}]
)
def test_foreign_host_or_origin_refused(page, headers):
    req = urllib.request.Request(page.url + "config", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
