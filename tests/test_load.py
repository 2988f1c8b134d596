"""Load: many sessions on one model wait their turn visibly; memory stays flat over many answers."""

import threading
import time

import pytest
from gradio_client.utils import Status

from research.device import rss_mb
from research.engine import Engine, EngineConfig, Sampling, Stats, conversation

pytestmark = [pytest.mark.page, pytest.mark.model]
SESSIONS = 8
#: Growth allowed between the 20th and the 200th answer (allocator noise, caches of pieces).
MEMORY_BOUND_MB = 25


def text(message):
    c = message["content"]
    return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)


@pytest.fixture(scope="module")
def echo_page(tmp_path_factory):
    """The real page serving a scripted model whose every answer repeats its question."""
    import json

    from fakes import ECHO
    from page_server import PageServer

    tmp = tmp_path_factory.mktemp("echo")
    (tmp / "script.json").write_text(json.dumps({"answers": [ECHO], "delay": 0.01}))
    server = PageServer(tmp, script=tmp / "script.json")
    yield server
    server.stop()


def test_eight_concurrent_sessions_queue_visibly_and_never_mix(echo_page):
    """Each answer names its own question, so any answer routed to, or mixed into, another
    session would show; the scripted model takes ~0.1 s an answer, so the sessions overlap."""
    page = echo_page
    results, ranks, errors = {}, {}, []

    def session(i):
        try:
            c = page.client()
            question = f"Session {i}: what is {i} plus {i}?"
            job = c.submit(question, [], "Answer briefly.", 0, 40, 0.95, 0.05, 1.1, 64, 1, api_name="/ask")
            seen = []
            deadline = time.time() + 300
            while not job.done() and time.time() < deadline:
                st = job.status()
                if st.code == Status.IN_QUEUE and st.rank is not None:
                    seen.append(st.rank)
                time.sleep(0.02)
            results[i] = (question, job.result(timeout=300)[0])
            ranks[i] = seen
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    assert errors == [] and len(results) == SESSIONS
    for question, history in results.values():
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert text(history[0]) == question
        answer = text(history[1]).split("\n\n<sub>")[0]
        assert "◷" in text(history[1])  # completed, with its figures
        assert answer == f"You asked: {question}"  # its own answer, whole, nothing of another's
    assert any(r and max(r) >= 1 for r in ranks.values()), ranks  # somebody saw a place in the line
    assert page.proc.poll() is None


def test_memory_stays_flat_over_200_answers():
    engine = Engine.load(None, EngineConfig(n_ctx=512, n_threads=2))
    sampling = Sampling(temperature=0.7, max_tokens=12, seed=1)
    marks = {}
    for i in range(1, 201):
        for item in engine.stream(conversation(f"Question number {i}: name a colour."), sampling):
            assert isinstance(item, (str, Stats))
        if i in (20, 200):
            marks[i] = rss_mb()
    engine.close()
    print(f"RSS after 20 answers {marks[20]:.1f} MB, after 200 {marks[200]:.1f} MB")
    assert marks[200] - marks[20] < MEMORY_BOUND_MB
