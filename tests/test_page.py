"""The chat page, launched for real on the bundled model and driven through gradio_client."""

import json
import threading
import urllib.error
import urllib.request

import psutil
import pytest

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


def answer_text(message):
    return text(message).split("\n\n<sub>")[0]


def text(message):
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


@pytest.fixture()
def client(page):
    return page.client()


def test_question_gets_a_streamed_answer_with_figures(client):
    job = client.submit(*ask_args("Write a story about a dragon.", max_tokens=256), api_name="/ask")
    updates = [out for out in job]
    history, box = job.result()
    assert updates[0][1] == ""  # the question box is emptied with the first update ...
    assert box in ("", {"__type__": "update"})  # ... and left alone after it (gr.skip())
    assert len(updates) >= 5  # streamed in pieces (at most one update every 250 ms), not at once
    assert [m["role"] for m in history] == ["user", "assistant"]
    answer = text(history[-1])
    assert "◷" in answer and "t/s" in answer and "MB" in answer  # the answer's figures
    assert len(answer.split("\n\n<sub>")[0].strip()) > 0


def test_rating_lands_in_the_ratings_file(client, page):
    history, _ = client.predict(*ask_args("Name a planet."), api_name="/ask")
    before = page.ratings.read_text().count("\n") if page.ratings.exists() else 0
    status = client.predict(history, 2, "wrong", "checked by a test", api_name="/rate")
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


def test_bad_model_is_refused_and_the_old_one_keeps_answering(client, page):
    fake = page.models / "page.gguf"
    fake.write_text("<!DOCTYPE html><html>not a model</html>")
    with pytest.raises(Exception, match="HTML|not a GGUF"):
        client.predict("smollm2-135m-q4_1", str(fake), api_name="/load_model")
    with pytest.raises(Exception, match="no such file"):
        client.predict("smollm2-135m-q4_1", str(page.models / "missing.gguf"), api_name="/load_model")
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
        c = page.client()
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
    # Greedy answers asked one after the other, alone: the concurrent ones must be the same.
    alone = page.client()
    for name, question in (("a", "What color is the sky?"), ("b", "How many legs does a spider have?")):
        history, _ = alone.predict(*ask_args(question, max_tokens=32), api_name="/ask")
        assert answer_text(results[name][-1]) == answer_text(history[-1]), name


def test_listens_on_loopback_only(page):
    conns = [
        c for c in psutil.Process(page.proc.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN
    ]
    assert conns, "the page should be listening"
    assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in conns), conns


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Origin": "http://evil.example"},
        {"Host": "attacker.com:7860"},
        {"Origin": "null"},  # a sandboxed frame, a data: or a file: page
        {"Origin": "NULL"},
        {"Origin": "http://127.0.0.1.evil.example"},
    ],
)
def test_foreign_host_or_origin_refused(page, headers):
    for route, data in (("config", None), ("gradio_api/upload", b"--x--\r\n")):
        req = urllib.request.Request(page.url + route, headers=headers, data=data)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 403, route
    ok = urllib.request.Request(page.url + "config", headers={"Origin": page.url.rstrip("/")} | page.headers)
    assert urllib.request.urlopen(ok, timeout=5).status == 200  # the page's own origin is fine


def test_every_response_carries_the_policy(page):
    for route in ("", "config", "gradio_api/info", "nonexistent-route"):
        try:
            headers = urllib.request.urlopen(page.url + route, timeout=5).headers
        except urllib.error.HTTPError as e:
            headers = e.headers
        csp = headers["Content-Security-Policy"] or ""
        for directive in ("default-src 'self'", "img-src 'self'", "connect-src 'self'", "frame-src 'none'"):
            assert directive in csp, (route, csp)
        assert headers["X-DNS-Prefetch-Control"] == "off" and headers["Referrer-Policy"] == "no-referrer"


def test_a_rating_after_another_session_switched_models_names_the_first(client, page):
    from fakes import random_model_gguf

    other = random_model_gguf(page.models / "other-model.gguf", n_layer=2, n_embd=64, n_ff=128, n_head=2)
    history, _ = client.predict(*ask_args("Name a colour."), api_name="/ask")
    second = page.client()
    try:
        status = second.predict("smollm2-135m-q4_1", str(other), api_name="/load_model")
        assert "other-model" in status
        before = page.ratings.read_text().count("\n") if page.ratings.exists() else 0
        client.predict(history, 4, "correct", "", api_name="/rate")
        rec = json.loads(page.ratings.read_text().splitlines()[before])
        assert (
            rec["model"] == "smollm2-135m-q4_1" and rec["answer"] == text(history[-1]).split("\n\n<sub>")[0]
        )
        assert rec["settings"]["temperature"] == 0 and rec["system"] == "Answer briefly."
        their, _ = second.predict(*ask_args("Say hi.", temperature=0.5), api_name="/ask")
        second.predict(their, 2, "wrong", "", api_name="/rate")
        rec = json.loads(page.ratings.read_text().splitlines()[before + 1])
        assert rec["model"] == "other-model" and rec["settings"]["temperature"] == 0.5
    finally:
        second.predict("smollm2-135m-q4_1", "", api_name="/load_model")


def test_the_loader_opens_only_allowed_folders_and_echoes_no_file(client, tmp_path):
    secret = tmp_path / "secret.gguf"
    secret.write_text("the secret text of some file\n")
    for name in (str(secret), "/etc/passwd", "/etc/hostname"):
        with pytest.raises(Exception) as e:
            client.predict("smollm2-135m-q4_1", name, api_name="/load_model")
        assert "opens model files only from" in str(e.value) and "secret text" not in str(e.value)


def test_temporary_files_are_private_and_gone_when_the_page_stops(tmp_path):
    from page_server import PageServer

    server = PageServer(tmp_path)
    try:
        [folder] = list(server.gradio.iterdir())
        assert folder.stat().st_mode & 0o077 == 0  # only this user
        c = server.client()
        history, _ = c.predict(*ask_args("Say hello.", max_tokens=16), api_name="/ask")
        files = c.predict(history, "Answer briefly.", api_name="/export")
        assert len(files) == 2 and list(folder.rglob("conversation-*.md"))
    finally:
        server.stop()
    assert server.proc.returncode is not None and not folder.exists()
    # A page killed outright cannot clean up; the next page to start removes what it left.
    killed = server.gradio / "research-page-999999-abc"  # no such process
    killed.mkdir()
    (killed / "conversation.md").write_text("left behind")
    again = PageServer(tmp_path)
    again.stop()
    assert not killed.exists()


def test_streaming_sends_only_the_new_text(page):
    """Each update of a streamed answer carries the new piece of text (Gradio's diffs), not the
    whole conversation again: with 10 kB of history, every update after the first stays small."""
    import httpx

    config = httpx.get(page.url + "config", headers=page.headers, timeout=10).json()
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "ask")
    history = []
    for i in range(10):
        history += [  # Gradio 6's raw API: content as a list of parts
            {"role": "user", "content": [{"type": "text", "text": f"Question {i}: " + "word " * 100}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"Answer {i}: " + "text " * 100}]},
        ]
    session = "streamingtest1"
    data = ["Write a story about a dragon.", history, "Answer briefly.", 0, 40, 0.95, 0.05, 1.1, 256, 1]
    body = {"data": data, "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
    r = httpx.post(page.url + "gradio_api/queue/join", json=body, headers=page.headers, timeout=10)
    assert r.status_code == 200, r.text
    sizes = []
    url = page.url + f"gradio_api/queue/data?session_hash={session}"
    with httpx.stream("GET", url, headers=page.headers, timeout=120) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_generating":
                sizes.append(len(line))
            if msg.get("msg") == "process_completed":
                break
    assert len(sizes) >= 5, sizes
    assert sizes[0] > 10_000  # the first update holds the conversation once
    assert max(sizes[1:]) < 1_500, sizes  # then only what changed: the new text
