"""The engine on the real bundled model: temperature 0, a small context; behaviour, not prose."""

import os
import subprocess
import sys
import threading

import pytest

from research.engine import Engine, EngineConfig, Sampling, Stats, conversation
from research.errors import KitError

pytestmark = pytest.mark.model
GREEDY = Sampling(temperature=0, seed=1, max_tokens=48)


@pytest.fixture(scope="module")
def engine():
    eng = Engine.load(None, EngineConfig(n_ctx=512, n_threads=2))
    yield eng
    eng.close()


def collect(stream):
    pieces, stats = [], None
    for item in stream:
        if isinstance(item, Stats):
            stats = item
        else:
            pieces.append(item)
    return "".join(pieces), stats


def test_loads_the_bundled_model_with_its_own_template(engine):
    assert engine.model_id == "smollm2-135m-q4_1"
    assert engine.format.name == "template" and engine.warning is None
    prompt = engine.format.render(conversation("Hi", "Be brief"))
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>system\nBe brief<|im_end|>" in prompt


def test_answers_with_figures(engine):
    text, stats = collect(engine.stream(conversation("What is the capital of France?"), GREEDY))
    assert text.strip() and "<|im_end|>" not in text and "\x00" not in text
    assert stats.prompt_tokens > 5 and 0 < stats.completion_tokens <= 48
    assert stats.ttft_s > 0 and stats.prompt_tps > 0 and stats.decode_tps > 0
    assert stats.peak_rss_mb > 90  # at least the weights are resident


def test_greedy_is_reproducible(engine):
    a, _ = collect(engine.stream(conversation("Name three colors."), GREEDY))
    b, _ = collect(engine.stream(conversation("Name three colors."), GREEDY))
    assert a == b


def test_later_turns_reuse_the_kv_cache(engine):
    first, _ = collect(engine.stream(conversation("Tell me about the moon."), GREEDY))
    history = [
        {"role": "user", "content": "Tell me about the moon."},
        {"role": "assistant", "content": first},
    ]
    _, stats = collect(engine.stream(conversation("And the sun?", None, history), GREEDY))
    assert stats.prompt_eval_tokens < stats.prompt_tokens / 2


def test_cancel_stops_it(engine):
    cancel = threading.Event()
    pieces = []
    sampling = Sampling(temperature=0.8, seed=3, max_tokens=400)
    for item in engine.stream(conversation("Write a long story about a dragon."), sampling, cancel):
        if isinstance(item, Stats):
            stats = item
        else:
            pieces.append(item)
            if len(pieces) == 3:
                cancel.set()
    assert stats.stop_reason == "cancelled" and stats.completion_tokens <= 6


def test_each_answer_frees_its_sampler_chain_at_once(engine, monkeypatch):
    """llama-cpp-python's LlamaSampler is freed through a reference cycle, i.e. only when the
    garbage collector runs; the engine frees each chain as its answer ends, however it ends."""
    made = []
    real = type(engine.backend).sampler

    def recording(self, sampling, seed):
        made.append(real(self, sampling, seed))
        return made[-1]

    monkeypatch.setattr(type(engine.backend), "sampler", recording)
    engine.answer(conversation("Name a colour."), Sampling(temperature=0, max_tokens=8))
    stream = engine.stream(conversation("Write a long story."), Sampling(temperature=0.8, seed=1))
    next(stream)
    stream.close()  # a reader that walks away mid-answer (the page's stop, a closed tab)
    assert len(made) == 2 and all(s.sampler is None for s in made)


def test_trimming_keeps_the_reply_inside_the_context(engine):
    history = []
    for i in range(12):
        history += [
            {"role": "user", "content": f"Question {i}: tell me something about the number {i}."},
            {"role": "assistant", "content": f"The number {i} is a number. " * 8},
        ]
    text, stats = collect(engine.stream(conversation("And the number 99?", "Be brief.", history), GREEDY))
    assert stats.trimmed_turns > 0
    assert stats.prompt_tokens + stats.completion_tokens <= engine.backend.n_ctx
    assert text


def test_question_longer_than_the_context_is_refused(engine):
    with pytest.raises(KitError, match="too long"):
        collect(engine.stream(conversation("word " * 2000), GREEDY))


def test_two_concurrent_requests_both_complete(engine):
    out = {}

    def ask(q):
        out[q] = collect(engine.stream(conversation(q), GREEDY))

    qs = ["What is water?", "What is fire?"]
    threads = [threading.Thread(target=ask, args=(q,)) for q in qs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(out) == set(qs)
    alone, _ = collect(engine.stream(conversation("What is fire?"), GREEDY))
    assert out["What is fire?"][0] == alone  # not mixed with the other answer


TOO_BIG = """
import resource, sys, psutil
import llama_cpp  # imported first: the limit is for the model, not for Python's imports
from research.engine import Engine
from research.errors import KitError
from research.models.catalog import resolve
vms = psutil.Process().memory_info().vms
resource.setrlimit(resource.RLIMIT_AS, (vms + 100 * 2**20, resource.RLIM_INFINITY))
try:
    Engine.load(None)
except KitError as e:
    print(e)
    sys.exit(3)
"""


def test_model_too_big_for_the_memory_limit_is_refused_before_loading():
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", TOO_BIG], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "needs about" in r.stdout and "address-space limit" in r.stdout


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(temperature=0, repeat_penalty=1.1, max_tokens=64),
        Sampling(
            temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, max_tokens=64, seed=7
        ),
        Sampling(temperature=0.8, top_k=0, top_p=0.9, min_p=0.0, repeat_penalty=1.3, max_tokens=64, seed=3),
        Sampling(temperature=0, repeat_penalty=0.7, max_tokens=64),
    ],
    ids=["greedy", "default", "no-top-k", "penalty-under-1"],
)
def test_cheaper_sampler_chain_picks_the_same_tokens(engine, sampling):
    """The kit's chain (with its top-k pre-filter) equals llama-cpp-python's own, token for token."""
    llm, b = engine.backend.llm, engine.backend
    prompt = llm.tokenize(engine.format.render(conversation("Tell me about cats.")).encode(), special=True)

    def tokens(make):
        llm.reset()
        llm.eval(prompt)
        s, out = make(), []
        for _ in range(sampling.max_tokens):
            out.append(s.sample(llm._ctx, -1))
            llm.eval([out[-1]])
        return out

    def theirs():
        llm.set_seed(sampling.seed or 0)
        return llm._init_sampler(
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
        )

    assert tokens(lambda: b.sampler(sampling, sampling.seed or 0)) == tokens(theirs)
