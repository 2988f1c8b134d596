"""Confidence on questions unlike those it was fitted on (issue 32): the question-side signals read
while the prompt is evaluated, calibrations fitted across question sets, the words they allow
and the questions they say they cannot judge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fakes import FakeBackend

from research import confidence
from research.confidence import calibration, selective, tables, transfer
from research.engine import Engine, EngineConfig, Sampling, conversation
from research.engine.prompts import STOPS, ChatFormat
from research.engine.signals import QUESTION, QUESTION_MAX_TOKENS, question_signals, question_span
from research.evaluation import run as evaluate
from research.qa.questions import load_questions, set_name


def pieces(text_tokens):
    return lambda t: text_tokens[t].encode()


def test_the_question_is_found_in_the_prompt_by_its_bytes_the_last_time_it_occurs():
    toks = ["<s>", "user", "\n", "Who", " wrote", "?", "", "\n", "Who", " wrote", "?", "", "assistant", "\n"]
    ids = list(range(len(toks)))
    assert question_span(ids, "Who wrote?", pieces(toks)) == (8, 11)
    assert question_span(ids, "  Who wrote?\n", pieces(toks)) == (8, 11)  # as the template strips it
    # a token that straddles the question's first or last byte belongs to it
    toks2 = ["user", "\nWho", " wro", "te?\n", "assistant"]
    assert question_span(list(range(5)), "Who wrote?", pieces(toks2)) == (1, 4)
    assert question_span(list(range(5)), "Who read?", pieces(toks2)) is None  # rewritten: none
    assert question_span(list(range(5)), "   ", pieces(toks2)) is None
    # a pasted page is no factual question: its signals are not read (each token costs a row of
    # logits); one of QUESTION_MAX_TOKENS tokens still is
    for n, got in ((500, None), (QUESTION_MAX_TOKENS, (2, 2 + QUESTION_MAX_TOKENS))):
        long = ["user", "\n"] + [f" w{i}" for i in range(n)] + ["", "assistant"]
        question = "".join(long[2 : 2 + n]).strip()
        assert question_span(list(range(len(long))), question, pieces(long)) == got


def test_question_signals_from_known_surprisals():
    texts = ["What", " is", " Vor", "arl", "berg", "'s", " capital", "?"]
    logprobs = [-1.0, -0.5, -6.0, -4.0, -2.0, -0.5, -1.0, -0.1]
    s = question_signals(logprobs, texts)
    assert set(s) == set(QUESTION)
    assert s["q_mean_surprisal"] == pytest.approx(15.1 / 8)
    assert s["q_max_surprisal"] == 6.0
    # words: What, is, Vorarlberg (3 tokens), 's (punctuation starts a word), capital; content
    # words are all but the stop words "What" and "is"; "?" is no word
    assert s["q_content_surprisal"] == pytest.approx((6 + 4 + 2 + 0.5 + 1) / 5)
    assert s["q_max_word_surprisal"] == pytest.approx(12.0)
    assert s["q_inword_surprisal"] == pytest.approx((4 + 2) / 2)
    assert s["q_tokens_per_word"] == pytest.approx(8 / 5)
    # the first tokens' rows may be missing (cached, or the prompt's first): matched from the end
    short = question_signals(logprobs[2:], texts)
    assert short["q_max_surprisal"] == 6.0 and short["q_mean_surprisal"] == pytest.approx(13.6 / 6)
    assert question_signals([], texts) is None


@pytest.fixture(scope="module")
def bundled():
    engine = Engine.load(None, EngineConfig(n_ctx=512, n_threads=2))
    yield engine
    engine.close()


def test_prompt_evaluation_reads_the_questions_own_log_probabilities_as_a_full_evaluation_would(bundled):
    """The rows llama.cpp computes for the watched tokens give the log-probabilities that a
    separate llama-cpp-python context with every row's logits (logits_all) gives, and the
    answer is the one given without watching."""
    import llama_cpp

    b = bundled.backend
    question = "Who discovered the moon Hyperion of Saturn?"
    messages = conversation(question, evaluate.SYSTEM)
    tokens = bundled.prompt_tokens(messages)
    span = question_span(tokens, question, b.token_bytes)
    assert span is not None and b"".join(b.token_bytes(t) for t in tokens[span[0] : span[1]]).strip() == (
        question.encode()
    )
    bundled.reset()
    watched_text, stats = bundled.answer(messages, evaluate.SETTINGS)
    got = list(b.question_trace)
    assert len(got) == span[1] - span[0] and all(x < 0 for x in got)
    assert set(QUESTION) <= set(stats.signals)

    # the answer's first tokens, as the decode loop samples them, with their signals
    b.watch = None
    bundled.reset()
    steps, answered = b.generate(tokens, evaluate.SETTINGS), []
    for t in steps:
        answered.append(t)
        if len(answered) == 6:
            break
    steps.close()
    trace = list(b.trace[:6])

    full = llama_cpp.Llama(
        str(bundled.ref.path), n_ctx=512, n_threads=2, logits_all=True, flash_attn=True, verbose=False
    )
    try:
        full.eval(tokens + answered)
        rows = np.asarray(full.scores[: len(tokens) + 6], dtype=np.float64)
    finally:
        full.close()
    top = rows.max(1, keepdims=True)
    logprobs = rows - top - np.log(np.exp(rows - top).sum(1, keepdims=True))
    want = [logprobs[i - 1, tokens[i]] for i in range(*span)]
    assert np.allclose(got, want, atol=0.05), (got, want)
    # the free signals of the answer's tokens (log-probability, entropy), read in place between
    # decode steps, are those of the full evaluation's rows
    at = range(len(tokens) - 1, len(tokens) + 5)
    want_lp = [logprobs[i, answered[k]] for k, i in enumerate(at)]
    want_h = [float(-(np.exp(logprobs[i]) * logprobs[i]).sum()) for i in at]
    assert np.allclose([lp for lp, _ in trace], want_lp, atol=0.05), (trace, want_lp)
    assert np.allclose([h for _, h in trace], want_h, atol=0.05), (trace, want_h)

    b.watch = None  # the engine sets it again at every answer: switch the backend's reading off
    bundled.backend.signals = False
    try:
        bundled.reset()
        plain, _ = bundled.answer(messages, evaluate.SETTINGS)
    finally:
        bundled.backend.signals = True
    assert plain == watched_text


def test_the_question_signals_cost_little_of_an_answers_time(bundled):
    """Their own timer (the log-softmax of the watched rows): under 2 % of the answer's time. The
    rows llama.cpp adds are measured side by side by `eval --signal-cost`, never timed here."""
    bundled.reset()
    _, stats = bundled.answer(conversation("What is the capital of Mongolia?"), Sampling(temperature=0))
    assert 0 < bundled.backend.question_s < stats.total_s


def test_words_take_the_calibrations_own_bounds_and_say_when_a_question_is_unlike_its_own():
    assert confidence.describe(0.6) == ("probably right", 0.6)
    bounds = {"probably right": 0.7, "likely right": 0.85}
    assert confidence.describe(0.6, bounds)[0] == "unsure, check this"
    assert confidence.describe(0.8, bounds)[0] == "probably right"
    assert confidence.describe(0.9, bounds)[0] == "likely right"
    never = {"probably right": None, "likely right": None}
    assert confidence.describe(0.99, never)[0] == "unsure, check this"
    words, value = confidence.describe(0.9, bounds, unlike=True)
    assert words == confidence.methods.UNLIKE and value is None
    assert confidence.label(0.9, unlike=True) == confidence.methods.UNLIKE  # no number at all
    assert confidence.Confidence(0.9, "free", "c", "", unlike=True).abstains(0.5)
    assert not confidence.Confidence(0.9, "free", "c", "", unlike=True).abstains(None)


def test_word_bounds_rise_until_every_set_keeps_the_promise():
    rng = np.random.default_rng(0)
    # set "easy": 60 answers at 0.6 (40 right) -> keeps "probably right" at 0.5;
    # set "hard": 20 at 0.6 all wrong, 20 at 0.8 (14 right) -> vetoes 0.5-0.775, allows 0.8
    p = np.r_[np.full(60, 0.6), np.full(20, 0.6), np.full(20, 0.8)]
    y = np.r_[np.ones(40), np.zeros(20), np.zeros(20), np.ones(14), np.zeros(6)]
    sets = ["easy"] * 60 + ["hard"] * 40
    b = transfer.word_bounds(p, y, sets)
    # 0.8: 70 % right, not 75 %; above 0.8 no answer was seen: no bound is set beyond them
    assert b["probably right"] == 0.625 and b["likely right"] is None
    # a set with few answers above a bound vetoes it all the same: one of four right is not half
    # (the hard sets' case: a few confident answers are all they say of the words there)
    few = transfer.word_bounds(np.r_[p, [0.7] * 4], np.r_[y, [1, 0, 0, 0]], sets + ["tiny"] * 4)
    assert few == {"probably right": 0.725, "likely right": None}
    # ... and keeps it where its few answers are right often enough; none above says nothing
    kept = transfer.word_bounds(np.r_[p, [0.7] * 4], np.r_[y, [1, 1, 0, 0]], sets + ["tiny"] * 4)
    assert kept == b
    assert transfer.word_bounds(np.r_[p, [0.3] * 4], np.r_[y, [0] * 4], sets + ["tiny"] * 4) == b
    # a set where the model is never right above any bound: never said
    assert transfer.word_bounds(rng.uniform(0.5, 1, 50), np.zeros(50), ["x"] * 50)["probably right"] is None


def test_support_flags_the_farthest_of_its_own_questions_and_what_lies_beyond():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (500, len(QUESTION)))
    sup = transfer.support_of(X)
    inside = [transfer.distance(sup, dict(zip(QUESTION, row, strict=True))) for row in X]
    assert 0.005 <= np.mean(np.array(inside) > sup["limit"]) <= 0.02
    cal = calibration.Calibration("free", "x", calibration.Logistic(("mean_logprob",)), {}, support=sup)
    assert not transfer.unlike(cal, dict(zip(QUESTION, [0.0] * len(QUESTION), strict=True)))
    assert transfer.unlike(cal, dict(zip(QUESTION, [6.0] * len(QUESTION), strict=True)))
    assert not transfer.unlike(cal, {"mean_logprob": -1.0})  # no question-side signals: not judged
    assert transfer.support_of(X[:10]) is None


def test_a_calibration_keeps_its_bounds_and_support_and_refuses_damaged_ones(tmp_path, capsys):
    rng = np.random.default_rng(2)
    records = []
    for i in range(120):
        hard = i % 3 == 0
        sig = {k: float(rng.normal(5 if hard else 3, 1)) for k in QUESTION}
        sig["mean_logprob"] = float(rng.normal(-1.0, 0.5))
        right = (not hard) and rng.random() < 0.6
        records.append(
            {
                "id": f"q{i}",
                "set": "hard" if hard else "easy",
                "scores": {"contains": right},
                "confidence": {"signals": sig},
            }
        )
    X, y, ids = selective.labelled(records, ("mean_logprob",))
    cal = transfer.fit_sets("mean_logprob", ("mean_logprob",), records, X, y, "sha", {"question_ids": ids})
    assert cal.fitted_on["sets"] == {
        "easy": {"n": 80, "right": int(y[:].sum())},
        "hard": {"n": 40, "right": 0},
    }
    assert set(cal.held_out["by_set"]) == {"easy", "hard"} and cal.support["n"] == 120
    assert "120 answers of this model to 2 question sets (easy 80" in transfer.fitted_line(cal)
    path = calibration.save(cal, tmp_path)
    again = calibration.validate(json.loads(path.read_text()), "sha", "mean_logprob")
    assert again.words == cal.words and again.support["limit"] == pytest.approx(cal.support["limit"])
    bad = json.loads(path.read_text())
    bad["support"]["scale"][0] = 0.0
    with pytest.raises(ValueError, match="scale"):
        calibration.validate(bad, "sha", "mean_logprob")
    bad = json.loads(path.read_text()) | {"words": {"probably right": 7, "likely right": None}}
    with pytest.raises(ValueError, match="outside 0.5-1"):
        calibration.validate(bad, "sha", "mean_logprob")
    bad = json.loads(path.read_text()) | {"words": {"surely right": 0.5}}
    with pytest.raises(ValueError, match="word bounds"):
        calibration.validate(bad, "sha", "mean_logprob")


def test_sets_weigh_alike_in_a_fit():
    w = transfer.set_weights(["a"] * 30 + ["b"] * 10)
    assert w.mean() == pytest.approx(1.0) and w[:30].sum() == pytest.approx(w[30:].sum())
    # a weighted fit moves toward the light set's rate
    X = np.zeros((40, 1))
    y = np.r_[np.ones(15), np.zeros(15), np.zeros(10)]
    plain = calibration.Logistic(("x",)).fit(X, y).predict([[0.0]])[0]
    weighed = calibration.Logistic(("x",)).fit(X, y, weights=w).predict([[0.0]])[0]
    assert plain == pytest.approx(15 / 40, abs=1e-6) and weighed == pytest.approx(0.25, abs=1e-6)


def test_several_question_sets_load_as_one_each_question_naming_its_set(tmp_path):
    for name in ("easy", "hard"):
        (tmp_path / name).mkdir()
        rows = [
            {"id": f"{name}{i}", "question": f"{name} question {i}", "answer": "x", "topic": "t"}
            for i in range(3)
        ]
        (tmp_path / name / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = f"{tmp_path}/easy/*.jsonl, {tmp_path / 'hard' / 'a.jsonl'}"
    qs = load_questions(spec)
    assert sorted({(q["set"], q["id"][:4]) for q in qs}) == [("a", "hard"), ("easy", "easy")]
    assert set_name("data/longtail/*.jsonl") == "longtail" and set_name("x/nq.jsonl") == "nq"
    assert set_name("hf:nq_open") == "nq_open"


CHATML = ChatFormat("chatml", stops=STOPS["chatml"])


def test_eval_reports_the_pages_method_on_each_set_with_the_hard_sets_targets(tmp_path):
    """Fitted on one set, judged on two others: the summary says per set how the words did."""
    backend = FakeBackend(["Paris.", "Paris.", "Lyon."], n_ctx=400, logprobs=[-0.1, -0.2, -2.0])
    engine = Engine(backend, CHATML, "fake")
    engine.__dict__["sha256"] = (
        "fake-sets-sha256"  # its own: a calibration saved here must not reach other tests
    )

    def qs(prefix, n, ref):
        return [
            {
                "id": f"{prefix}{i}",
                "question": f"Name the capital {i}",
                "references": [ref],
                "topic": "t",
                "set": prefix,
            }
            for i in range(n)
        ]

    fit_on = evaluate.run(engine, qs("fit", 45, "Paris"), tmp_path / "a.jsonl", progress=False)
    names = confidence.METHODS["free"].signals
    X, y, ids = selective.labelled(fit_on, names)
    calibration.save(transfer.fit_sets("free", names, fit_on, X, y, engine.sha256, {"question_ids": ids}))
    hard = qs("hard", 30, "Rome")
    for q in hard[:6]:  # two in three answers are Paris: right 4 times in 30
        q["references"] = ["Paris"]
    judged = evaluate.run(engine, qs("same", 30, "Paris") + hard, tmp_path / "b.jsonl", progress=False)
    assert {r["set"] for r in judged} == {"same", "hard"}
    assert all(set(QUESTION) <= set(r["confidence"]["signals"]) for r in judged)
    summary = evaluate.summarize(judged) | evaluate.confidence_report(judged, engine.sha256)
    assert set(summary["confidence_by_set"]) == {"same", "hard"}
    text = evaluate.format_summary(summary)
    hard = next(x for x in text.splitlines() if x.startswith("  set hard"))
    assert "13.3% right" in hard and "hard-set targets: mean within 10 points not met" in hard, hard
    assert "words, free: worded probably or likely right" in text
    same = next(x for x in text.splitlines() if x.startswith("  set same"))
    assert "hard-set targets" not in same  # right 2 times in 3: not a hard set


def test_abstention_never_picks_the_best_method_on_the_answers_it_judges(tmp_path):
    backend = FakeBackend(["Paris.", "Lyon."], n_ctx=400, logprobs=[-0.1, -2.0])
    engine = Engine(backend, CHATML, "fake-abstain")
    engine.__dict__["sha256"] = "fake-abstain-sha256"
    qs = [
        {"id": f"q{i}", "question": f"Capital {i}", "references": ["Paris"], "topic": "t"} for i in range(30)
    ]
    records = evaluate.run(engine, qs, tmp_path / "a.jsonl", progress=False)
    got = evaluate.confidence_report(records, engine.sha256, abstain_below=0.5)["abstention"]
    assert got["method"] == confidence.DEFAULT and not math.isnan(got["answered"])
    assert tables.HARD == 0.15


def _saved(tmp_path, **change) -> dict:
    """A valid calibration file's contents with `change` merged into it."""
    names = ("mean_logprob",)
    X, y = np.array([[-0.1], [-2.0]] * 10), np.array([1.0, 0.0] * 10)
    cal = calibration.fit("mean_logprob", names, X, y, "sha", {"sets": {"qa": {"n": 20, "right": 10}}})
    cal.words = {"probably right": 0.6, "likely right": 0.8}
    d = json.loads(calibration.save(cal, tmp_path).read_text())
    for key, value in change.items():
        if key in ("fitted_on", "held_out"):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


@pytest.mark.parametrize(
    "change",
    [
        {"fitted_on": {"sets": ["qa"]}},
        {"fitted_on": {"sets": {"qa": 5}}},
        {"fitted_on": {"sets": {"qa": {"n": "10", "right": 1}}}},
        {"fitted_on": {"sets": {"qa": {"n": 10, "right": 11}}}},
        {"fitted_on": {"sets": {"x" * 41: {"n": 10, "right": 1}}}},
        {"fitted_on": {"n": 10**4000}},
        {"held_out": {"mean_p": "x"}},
        {"held_out": {"mean_p": 1.5}},
        {"words": {"probably right": 0.0, "likely right": None}},  # "probably right, 3 %"
        {"words": {"likely right": 0.9}},  # one key: the other would fall back to 50 %
        {"words": {"probably right": None, "likely right": 0.8}},  # likely where probably is never said
        {"words": {"probably right": 0.8, "likely right": 0.76}},  # inverted
    ],
)
def test_a_calibration_whose_ground_or_words_say_more_than_they_may_is_refused(tmp_path, change):
    with pytest.raises(ValueError):
        calibration.validate(_saved(tmp_path, **change), "sha", "mean_logprob")


def test_the_model_line_survives_any_calibration_load_lets_by(tmp_path, monkeypatch):
    good = calibration.validate(_saved(tmp_path), "sha", "mean_logprob")
    assert transfer.fitted_line(good).startswith("confidence (mean_logprob) fitted on 20 answers")
    broken = calibration.Calibration("free", "sha", good.model, {"sets": ["qa"]})
    monkeypatch.setattr(transfer, "load", lambda *_: broken)
    assert transfer.about("sha") == "not calibrated"


def test_comma_separated_sets_refuse_what_would_mix_their_records(tmp_path):
    from research.errors import KitError

    for name in ("easy", "hard"):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"id": "1", "question": f"{name}?", "answer": "x"})
        )
    with pytest.raises(KitError, match="question id '1' is in both 'easy' and 'hard'"):
        load_questions(f"{tmp_path}/easy.jsonl,{tmp_path}/hard.jsonl")
    with pytest.raises(KitError, match="two question sets named 'easy'"):
        load_questions(f"{tmp_path}/easy.jsonl,{tmp_path}/easy.jsonl")
    with pytest.raises(KitError, match="names no question set"):
        load_questions(" , ")


def test_the_question_signals_are_of_this_answer_alone(bundled):
    """Asked again with its question cached, a question reads the same signals (the cached copy is
    evaluated again); after the answer nothing is watched (P(True), teacher forcing); a question
    after others in a conversation reads none (its words are predictable from them)."""
    b = bundled.backend
    messages = conversation("What is the capital city of the Kingdom of Bhutan?")
    bundled.reset()
    _, first = bundled.answer(messages, evaluate.SETTINGS)
    assert b.watch is None
    _, again = bundled.answer(messages, evaluate.SETTINGS)  # the same prompt, all of it cached
    q = {k: first.signals[k] for k in QUESTION}
    assert q == pytest.approx({k: again.signals[k] for k in QUESTION})
    turn2 = [
        *messages,
        {"role": "assistant", "content": "Thimphu."},
        {"role": "user", "content": "And of Nepal?"},
    ]
    _, later = bundled.answer(turn2, evaluate.SETTINGS)
    assert later.signals and not set(QUESTION) & set(later.signals)


def test_the_terminal_says_no_number_for_a_question_unlike_the_calibrations():
    from research.cli import commands

    conf = confidence.Confidence(0.95, "free", "c", confidence.UNLIKE, unlike=True)
    said = commands._withheld(conf, 0.5)
    assert confidence.UNLIKE in said and "%" not in said
