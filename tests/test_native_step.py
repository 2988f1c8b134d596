"""The engine's decode step in C (research.engine.native, step.c) on the real bundled model: the
same tokens and the same free signals as the Python loop for every kind of sampler chain the kit
builds, and the Python loop whenever the C step cannot be built or trusted."""

import os
import stat

import pytest

from research.engine import Engine, EngineConfig, Sampling, conversation, native

pytestmark = pytest.mark.model

CHAINS = {
    "greedy": Sampling(temperature=0, repeat_penalty=1.1, max_tokens=96),
    "greedy-no-penalty": Sampling(temperature=0, repeat_penalty=1.0, max_tokens=96),
    "default": Sampling(max_tokens=96, seed=7),
    "no-top-k": Sampling(
        temperature=0.8, top_k=0, top_p=0.9, min_p=0.0, repeat_penalty=1.3, max_tokens=96, seed=3
    ),
    "top-k-no-penalty": Sampling(temperature=1.2, top_k=5, repeat_penalty=1.0, max_tokens=96, seed=11),
    "penalty-under-1": Sampling(temperature=0.9, repeat_penalty=0.8, max_tokens=96, seed=5),
}


@pytest.fixture(scope="module")
def engine():
    eng = Engine.load(None, EngineConfig(n_ctx=1024, n_threads=2))
    yield eng
    eng.close()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """native's memory of an earlier build forgotten, and builds cached in a folder of the test's own."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_why", {"reason": ""})
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def run(engine, sampling, use_c: bool):
    b = engine.backend
    b.native = use_c
    b.reset()
    tokens = engine.prompt_tokens(conversation("Tell me about cats and the sea."))
    steps = b.generate(tokens, sampling)
    try:
        out = [next(steps) for _ in range(sampling.max_tokens)]
    finally:
        steps.close()
        b.native = True
    return out, list(b.trace)


@pytest.mark.parametrize("sampling", CHAINS.values(), ids=CHAINS.keys())
def test_the_c_step_samples_the_python_loops_tokens_with_the_same_signals(engine, sampling):
    assert native.step() is not None, native.why()  # else this would compare the Python loop with itself
    c_tokens, c_trace = run(engine, sampling, True)
    py_tokens, py_trace = run(engine, sampling, False)
    assert c_tokens == py_tokens
    assert len(c_trace) == len(py_trace) == sampling.max_tokens
    for (lp_c, h_c), (lp_py, h_py) in zip(c_trace, py_trace, strict=True):
        assert lp_c == pytest.approx(lp_py, abs=2e-5) and h_c == pytest.approx(h_py, abs=2e-5)


def test_without_a_compiler_the_engine_answers_through_its_python_loop(engine, fresh, monkeypatch):
    broken = fresh / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: cannot compile today' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    assert native.step() is None
    assert "could not build step.c: cc: cannot compile today" in native.why()
    greedy = Sampling(temperature=0, max_tokens=24)
    text, _ = engine.answer(conversation("Name a colour."), greedy)
    monkeypatch.undo()  # the compiler back, the C step built again
    native._loaded.clear()
    assert native.step() is not None
    assert engine.answer(conversation("Name a colour."), greedy)[0] == text


def test_code_in_a_folder_others_may_write_is_not_loaded(fresh):
    built = native._build()
    os.chmod(built.parent, 0o777)
    try:
        native._loaded.clear()
        assert native.step() is None
        assert "is not this user's alone" in native.why()
    finally:
        os.chmod(built.parent, stat.S_IRWXU)


def test_research_native_step_0_keeps_the_python_loop(fresh, monkeypatch):
    monkeypatch.setenv("RESEARCH_NATIVE_STEP", "0")
    assert native.step() is None and native.why() == "RESEARCH_NATIVE_STEP=0"


def test_ties_among_the_highest_logits_are_seen(fresh):
    """Where logits tie among the `keep` highest or across the cut, step.c hands the chain the whole
    vocabulary (llama.cpp's partial sort could order tied tokens otherwise on fewer candidates)."""
    import ctypes

    import llama_cpp

    ties = native._load(native._build()).kit_ties_at_the_top
    ties.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]

    def check(logits, keep):
        room = (llama_cpp.llama_token_data * len(logits))(*((i, x, 0.0) for i, x in enumerate(logits)))
        return bool(ties(ctypes.addressof(room), len(logits), keep))

    assert not check([5.0, 1.0, 4.0, 3.0, 2.0, 0.5], 3)
    assert check([5.0, 1.0, 4.0, 4.0, 2.0, 0.5], 3)  # a tie among the three highest
    assert check([5.0, 1.0, 4.0, 3.0, 3.0, 0.5], 3)  # the third highest has a twin below the cut
    assert not check([5.0, 1.0, 4.0, 3.0, 1.0, 0.5], 3)  # ties below the cut do not matter
    grid = [round(0.25 * (i % 40), 2) for i in range(400)]  # logits on a grid: ties everywhere
    assert check(grid, 104)
    assert check(list(range(5000)), 10)  # more candidates than it sorts: the exact way


def test_a_batch_left_early_keeps_the_kv_cache_and_its_record_in_step(engine):
    """step.c decodes several tokens a call: a reader that stops inside a batch (a stop string, a
    cancel) leaves the tokens decoded beyond it in the KV cache, recorded as such, and the next
    answer is the one a fresh context gives."""
    b, llm = engine.backend, engine.backend.llm
    greedy = Sampling(temperature=0, max_tokens=64)
    b.reset()
    prompt = engine.prompt_tokens(conversation("Count from one to twenty."))
    steps = b.generate(prompt, greedy)
    taken = [next(steps) for _ in range(3)]
    steps.close()
    held = list(llm.input_ids[: llm.n_tokens])
    assert held[: len(prompt) + 2] == [*prompt, *taken[:2]]
    assert len(prompt) + 2 <= llm.n_tokens <= len(prompt) + 2 + native.STEPS_A_CALL
    # The next question reuses the prompt from the cache and drops what was decoded beyond it.
    assert b.cached_prefix(prompt) == len(prompt) - 1
    text, stats = engine.answer(conversation("Count from one to twenty."), greedy)
    assert text and stats.prompt_eval_tokens == 1
    assert list(llm.input_ids[: len(prompt)]) == prompt
