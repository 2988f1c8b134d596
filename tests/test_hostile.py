"""Hostile and damaged model files against `chat --model` and the page: one clear line, no crash."""

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import tiny_gguf
from test_gguf_info import DAMAGED
from test_prompts import GROWTH_MB, REFUSAL_S, TRIGGERED, UNBOUNDED, within

ROOT = Path(__file__).resolve().parents[1]
MEMORY_BOUND = 4 * 2**30  # address space a hostile file may make us use
TIME_BOUND = 60  # seconds for one refusal, Python start-up and imports included


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    files = {}
    for i, (name, (data, _)) in enumerate(DAMAGED.items()):
        files[name] = folder / f"case{i:02d}.gguf"
        files[name].write_bytes(data)
    files["valid header, unusable model"] = folder / "unusable.gguf"
    tiny_gguf(files["valid header, unusable model"])
    files["empty"] = folder / "empty.gguf"
    files["empty"].write_bytes(b"")
    return files


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))


def test_chat_refuses_every_hostile_file_in_one_line(corpus):
    failures = []
    for name, path in corpus.items():
        r = subprocess.run(
            [sys.executable, "-m", "research", "chat", "--model", str(path), "-p", "hi"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=TIME_BOUND,
            preexec_fn=limited,
        )
        lines = r.stderr.strip().splitlines()
        if (
            r.returncode != 1
            or len(lines) != 1
            or not lines[0].startswith("error: ")
            or "Traceback" in r.stderr
        ):
            failures.append((name, r.returncode, r.stderr[-300:]))
    assert failures == []


@pytest.mark.page
@pytest.mark.model
def test_page_refuses_every_hostile_file_and_keeps_serving(page, corpus):
    import shutil

    client = page.client()
    folder = page.models / "hostile"  # inside the folder the page may open files from
    folder.mkdir(exist_ok=True)
    for name, path in corpus.items():
        inside = shutil.copy(path, folder / path.name)
        with pytest.raises(Exception) as e:
            client.predict("smollm2-135m-q4_1", str(inside), api_name="/load_model")
        message = str(e.value)
        assert "opens model files only from" not in message, name  # read, and refused for what it is
        assert path.name in message or "llama.cpp" in message or "GGUF" in message, name
    assert page.proc.poll() is None  # the page's process survived every file
    history, _ = client.predict("What is 2 + 2?", [], "", 0, 40, 0.95, 0.05, 1.1, 16, 1, api_name="/ask")
    assert history[-1]["content"]


def test_inspect_refuses_in_one_line_within_bounds(corpus):
    for name in ("huge array length", "tensor data cut short", "HTML page", "valid header, unusable model"):
        r = subprocess.run(
            [sys.executable, "-m", "research", "inspect", str(corpus[name])],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=TIME_BOUND,
            preexec_fn=limited,
        )
        if name == "valid header, unusable model":
            assert r.returncode == 0  # the header is fine: inspect describes it; loading is refused
        else:
            assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), name
    assert os.path.exists(corpus["empty"])


def test_a_crash_while_trying_a_file_is_reported_and_survived():
    """What the parent does when llama.cpp aborts in the child (a real child killed by SIGABRT)."""
    from research.engine import EngineConfig, prepare, selftest
    from research.errors import KitError

    ref, info, config = prepare(None, EngineConfig(n_ctx=256, n_threads=1))

    def aborts(path, config, extra):
        return [sys.executable, "-c", "import os; os.abort()"]

    def sleeps(path, config, extra):
        return [sys.executable, "-c", "import time; time.sleep(30)"]

    with pytest.raises(KitError, match=r"crashed \(SIGABRT\).*damaged or hostile.*separate process"):
        selftest.ensure(ref.path, info, config, trusted=False, command=aborts)
    with pytest.raises(KitError, match="did not finish.*may be hostile"):
        selftest.ensure(ref.path, info, config, trusted=False, timeout=1, command=sleeps)


def test_untrusted_files_are_tried_in_a_child_first(tmp_path):
    from research.models.catalog import ModelRef, resolve
    from research.models.vouched import trusted

    bundled = resolve(None)
    assert trusted(bundled)
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(bundled.path.read_bytes())
    assert not trusted(resolve(str(copy)))  # same bytes, but a path the kit cannot vouch for
    namesake = tmp_path / bundled.path.name
    namesake.write_bytes(b"GGUF")
    assert not trusted(resolve(str(namesake)))  # the bundled file's name is not enough
    assert not trusted(ModelRef("x", copy))


HOSTILE_TEMPLATES = {
    "os.popen via cycler globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "subclasses walk": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if 'Popen' in c.__name__ %}"
    "{{ c(['touch', 'MARKER']) }}{% endif %}{% endfor %}",
    "lipsum globals": "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "attr filter": "{{ (''|attr('__class__')|attr('__mro__'))[1] }}{{ joiner.__init__.__globals__ }}",
}


@pytest.mark.model
@pytest.mark.parametrize("template", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_hostile_template_inside_a_real_gguf_runs_nothing(tmp_path, template):
    """The bundled model with its chat template swapped for one that reaches for Python's insides."""
    from research.engine import Engine, EngineConfig, Sampling, conversation
    from research.models.catalog import resolve

    marker = tmp_path / "pwned"
    template = template.replace("MARKER", str(marker))
    data = resolve(None).path.read_bytes()
    key = b"tokenizer.chat_template"
    at = data.index(key) + len(key) + 4  # past the key and the value type: the string's length
    start = at + 8
    end = start + int.from_bytes(data[at:start], "little")
    assert len(template) <= end - start
    hostile = tmp_path / "hostile.gguf"
    hostile.write_bytes(data[:start] + template.encode().ljust(end - start) + data[end:])

    engine = Engine.load(hostile, EngineConfig(n_ctx=256, n_threads=2))
    assert engine.format.name == "chatml" and (
        "refused" in engine.warning or "failed to render" in engine.warning
    )
    text, _ = engine.answer(conversation("Say hi."), Sampling(temperature=0, max_tokens=8))
    engine.close()
    assert text.strip()
    assert not marker.exists()


@pytest.mark.model
def test_template_with_a_syntax_error_does_not_stop_the_model(tmp_path):
    from research.engine import Engine, EngineConfig
    from research.models.catalog import resolve

    data = resolve(None).path.read_bytes()
    key = b"tokenizer.chat_template"
    at = data.index(key) + len(key) + 4
    n = int.from_bytes(data[at : at + 8], "little")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: at + 8] + b"{% endfor %}".ljust(n) + data[at + 8 + n :])
    engine = Engine.load(broken, EngineConfig(n_ctx=256, n_threads=2))
    assert engine.format.name == "chatml" and "failed to render" in engine.warning
    engine.close()


# ---- chat templates that never end or eat memory, inside the real model file ----


def gguf_with_template(folder: Path, template: str) -> Path:
    """A copy of the bundled model whose chat template is `template`, padded with a Jinja comment."""
    from research.models.catalog import resolve

    data = resolve(None).path.read_bytes()
    key = b"tokenizer.chat_template"
    at = data.index(key) + len(key) + 4  # past the key and the value type: the string's length
    start = at + 8
    end = start + int.from_bytes(data[at:start], "little")
    room = end - start - len(template.encode()) - 4
    assert room >= 0, "the template does not fit in the bundled model's"
    path = folder / "template.gguf"
    path.write_bytes(data[:start] + (template + "{#" + " " * room + "#}").encode() + data[end:])
    return path


def measured(monkeypatch, module, name):
    """Wrap module.name to record its seconds and the growth of this process's peak RSS."""
    from research import device

    real, reset, seen = getattr(module, name), device.reset_peak_rss, {}
    monkeypatch.setattr(device, "reset_peak_rss", lambda: True)  # the engine's own reset hides ours

    def wrapper(*args, **kwargs):
        reset()
        before, start = device.rss_mb(), time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            seen["s"], seen["mb"] = time.monotonic() - start, device.peak_rss_mb() - before

    monkeypatch.setattr(module, name, wrapper)
    return seen


def prompts_seen(engine) -> list[str]:
    """Record every prompt the engine tokenizes: a prompt is tokenized in pieces (the format's with
    special tokens, the contents as text: engine.prompt_tokens), the first with its BOS."""
    texts, tokenize = [], engine.backend.tokenize

    def recording(text, special=True, bos=True):
        if bos or not texts:
            texts.append("")
        texts[-1] += text
        return tokenize(text, special=special, bos=bos)

    engine.backend.tokenize = recording
    return texts


@pytest.mark.model
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures peak RSS through /proc")
@pytest.mark.parametrize("template", UNBOUNDED.values(), ids=UNBOUNDED.keys())
def test_unbounded_template_inside_a_real_gguf_is_refused_within_bounds(tmp_path, monkeypatch, template):
    from research.engine import Engine, EngineConfig, Sampling, conversation
    from research.engine import engine as engine_module
    from research.engine.prompts import FORMATS

    seen = measured(monkeypatch, engine_module, "choose_format")  # the template's trial at load
    path = gguf_with_template(tmp_path, template)
    engine = within(REFUSAL_S + 60, Engine.load, path, EngineConfig(n_ctx=256, n_threads=2))
    assert seen["s"] < REFUSAL_S and seen["mb"] < GROWTH_MB, seen
    assert engine.format.name == "chatml" and "stopped" in engine.warning and "\n" not in engine.warning
    texts = prompts_seen(engine)
    messages = conversation("Say hi.")
    text, _ = engine.answer(messages, Sampling(temperature=0, max_tokens=8))
    engine.close()
    assert text.strip() and texts[-1] == FORMATS["chatml"](messages)


@pytest.mark.model
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures peak RSS through /proc")
@pytest.mark.parametrize("trigger", ["LOOP", "GROW"])
def test_template_that_misbehaves_on_one_question_gives_way_to_chatml(tmp_path, monkeypatch, trigger):
    from research.engine import Engine, EngineConfig, Sampling, conversation
    from research.engine import engine as engine_module
    from research.engine.prompts import FORMATS

    own = TRIGGERED.replace("im_", "IM_")  # its own format, told apart from the fallback's
    engine = Engine.load(gguf_with_template(tmp_path, own), EngineConfig(n_ctx=512, n_threads=2))
    assert engine.format.name == "template" and engine.warning is None  # it passed at load
    texts = prompts_seen(engine)
    greedy = Sampling(temperature=0, max_tokens=8)
    engine.answer(conversation("Say hi."), greedy)
    assert texts[-1] == FORMATS["chatml"](conversation("Say hi.")).replace("im_", "IM_")  # its own format
    seen = measured(monkeypatch, engine_module, "fit_history")  # where the engine renders a question
    # In an old turn: the first render, of the whole conversation, meets it before any trim.
    history = [{"role": "user", "content": f"{trigger} now"}, {"role": "assistant", "content": "Hello."}]
    messages = conversation("Say hi.", history=history * 40)
    text, stats = within(REFUSAL_S + 60, engine.answer, messages, greedy)
    assert seen["s"] < REFUSAL_S and seen["mb"] < GROWTH_MB, seen
    assert text.strip() and stats.trimmed_turns > 0
    assert engine.format.name == "chatml" and "stopped" in engine.format.warning
    assert texts[-1] == FORMATS["chatml"](messages[stats.trimmed_turns :])  # the answer's prompt
    engine.answer(conversation("Say hi."), greedy)
    assert texts[-1] == FORMATS["chatml"](conversation("Say hi."))  # for good
    engine.close()


@pytest.mark.model
def test_other_engines_answer_while_one_template_is_stuck(tmp_path):
    """A stuck render holds its own engine only: a second engine rendering its template in a
    worker, and one on a named format, answer before the stuck one is even refused."""
    from research.engine import Engine, EngineConfig, Sampling, conversation

    config = EngineConfig(n_ctx=256, n_threads=1)
    stuck = Engine.load(gguf_with_template(tmp_path, TRIGGERED), config)
    other = Engine.load(None, config)
    named = Engine.load(None, EngineConfig(n_ctx=256, n_threads=1, chat_format="chatml"))
    assert stuck.format.name == other.format.name == "template" and named.format.name == "chatml"
    greedy = Sampling(temperature=0, max_tokens=4)
    for engine in (stuck, other, named):
        engine.answer(conversation("Say hi."), greedy)  # warm: workers up, buffers allocated
    thread = threading.Thread(target=stuck.answer, args=(conversation("LOOP, say hi."), greedy), daemon=True)
    start = time.monotonic()
    thread.start()
    time.sleep(0.3)  # its render is looping in a worker
    for engine in (other, named):
        text, _ = engine.answer(conversation("Say hi."), greedy)
        assert text.strip()
    assert stuck.format.name == "template", time.monotonic() - start  # served before it was refused
    thread.join(REFUSAL_S + 30)
    assert not thread.is_alive() and stuck.format.name == "chatml"
    for engine in (stuck, other, named):
        engine.close()
