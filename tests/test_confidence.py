"""Confidence signals, calibration and abstention on a scripted fake model."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeBackend

from research import confidence, jsonl
from research.confidence import calibration, selective, tables
from research.engine import Engine, Sampling, Stats, conversation
from research.engine.prompts import STOPS, ChatFormat
from research.engine.signals import token_signals
from research.errors import KitError
from research.evaluation import run as evaluate
from research.ratings import store as ratings

CHATML = ChatFormat("chatml", stops=STOPS["chatml"])
ROOT = Path(__file__).resolve().parents[1]


def fake_engine(answers, logprobs, name="fake"):
    e = Engine(FakeBackend(answers, n_ctx=400, logprobs=logprobs), CHATML, name)
    e.__dict__["sha256"] = f"{name}-sha256"
    return e


def stats_of(engine, question):
    *_, stats = engine.stream(conversation(question), Sampling(temperature=0))
    assert isinstance(stats, Stats)
    return stats


def test_free_signals_come_from_the_tokens_of_the_answer_itself():
    engine = fake_engine(["The capital of Australia is Canberra."], [-0.25])
    stats = stats_of(engine, "What is the capital of Australia?")
    s = stats.signals
    assert s["n_tokens"] == len("The capital of Australia is Canberra.")  # not the end-of-answer token
    assert s["mean_logprob"] == pytest.approx(-0.25) and s["mean_entropy"] == pytest.approx(0.25)
    # a backend with signals off keeps no trace: no signals, not made-up ones
    assert stats_of(fake_engine(["Paris."], None), "Capital of France?").signals is None


def test_answer_signals_skip_the_words_that_restate_the_question():
    # "The capital of Australia is" is near-certain restatement; "Canberra" carries the doubt
    texts = ["The", " capital", " of", " Australia", " is", " Can", "berra", "."]
    trace = [(-0.01, 0.1)] * 5 + [(-2.0, 3.0), (-0.5, 1.0), (-0.1, 0.2)]
    s = token_signals(trace, texts, "What is the capital of Australia?")
    assert s["answer_first_logprob"] == -2.0  # " Can", the first word not in the question
    assert s["answer_mean_logprob"] == pytest.approx(-1.25)  # "Canberra" only: its two tokens
    assert s["mean_logprob"] == pytest.approx(sum(t[0] for t in trace) / 8)
    assert s["first_logprob"] == -0.01
    assert s["type_match"] == 1.0  # "Canberra": a word the question did not hold
    # the same tokens answer "Who ...?" with no name: only the question's words and "is"
    assert token_signals(trace[:5], texts[:5], "Who is the capital of Australia?")["type_match"] == 0.0
    # the answer as shown, where given: a character split across tokens decodes whole only there
    split = token_signals(trace[:2], ["\ufffd", "\ufffd."], "Who wrote it?", shown="Ø.")
    assert (
        split["type_match"] == 1.0
        and token_signals(trace[:2], ["\ufffd", "\ufffd."], "Who wrote it?")["type_match"] == 0.0
    )
    assert token_signals([], [], "q") is None


def test_agreement_and_semantic_entropy_after_normalization():
    q = "What is the capital of Australia?"
    same = confidence.agreement_signals(
        "The capital of Australia is Canberra.", ["Canberra.", "canberra", "It is Canberra"], q
    )
    assert same["agreement"] == 1.0 and same["semantic_entropy"] == 0.0
    split = confidence.agreement_signals("Canberra.", ["Sydney", "Canberra", "Melbourne", "Sydney."], q)
    assert split["agreement"] == 0.25
    # clusters {Canberra x2}, {Sydney x2}, {Melbourne}: entropy over 5 answers
    assert split["semantic_entropy"] == pytest.approx(-(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)))
    assert not confidence.same_answer("", "")  # empty answers agree with nothing


def test_agreement_among_the_samples_themselves():
    q = "What is the capital of Australia?"
    # the answer disagrees with samples that agree with each other: the model is settled, on
    # another answer
    got = confidence.agreement_signals("Sydney.", ["Canberra", "Canberra.", "It is Canberra"], q)
    assert got["lexical_agreement"] == 0.0 and got["sample_consistency"] == 1.0
    assert got["eigv"] == pytest.approx(2.0)  # two meanings: Sydney, Canberra
    scattered = confidence.agreement_signals("Sydney.", ["Perth", "Darwin", "Hobart"], q)
    assert scattered["sample_consistency"] == 0.0 and scattered["eigv"] == pytest.approx(4.0)
    # eigv counts clusters smoothly: half-similar answers count between one and two
    assert 1.0 < confidence.eigv([[1.0, 0.5], [0.5, 1.0]]) < 2.0
    assert confidence.eigv([[1.0, 1.0], [1.0, 1.0]]) == pytest.approx(1.0)


def test_words_for_probabilities():
    assert confidence.describe(0.82) == ("likely right", 0.82)
    assert confidence.label(0.82) == "likely right, 82 %"
    assert confidence.label(0.23) == "likely wrong, check this: 23 %"
    assert confidence.label(0.4) == "unsure, check this: 40 %"
    assert confidence.label(0.6) == "probably right, 60 %"
    assert confidence.describe(None) == ("not calibrated", None)


def separable(n=60, seed=0):
    """Signals where right answers have higher log-probabilities, with noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(float)
    x = rng.normal(-1.5 + 1.2 * y, 0.5)
    return x[:, None], y


def test_calibration_fits_saves_and_gives_probabilities(tmp_path):
    X, y = separable()
    cal = calibration.fit(
        "mean_logprob", ("mean_logprob",), X, y, "abc123", {"source": "test", "question_ids": []}
    )
    assert cal.held_out["auroc"] > 0.8 and cal.fitted_on["n"] == 60 and cal.fitted_on["right"] == int(y.sum())
    path = calibration.save(cal, tmp_path)
    assert path == tmp_path / "abc123" / "mean_logprob.json"
    back = calibration.Calibration.from_dict(json.loads(path.read_text()))
    assert back.id == cal.id and back.probability({"mean_logprob": -0.2}) == pytest.approx(
        cal.probability({"mean_logprob": -0.2})
    )
    assert cal.probability({"mean_logprob": -0.2}) > 0.6 > 0.4 > cal.probability({"mean_logprob": -2.5})
    assert cal.probability({"other": 1.0}) is None  # a signal it needs is missing


def test_calibration_is_refused_on_too_few_answers():
    with pytest.raises(KitError, match="too few labelled answers"):
        calibration.fit("free", ("mean_logprob",), [[0.0]] * 5, [1, 0, 1, 0, 1], "x", {})


def test_metrics_on_known_cases():
    assert calibration.auroc([0.9, 0.2, 0.6], [1, 0, 0]) == 1.0
    assert calibration.auroc([0.5, 0.5], [1, 0]) == 0.5  # ties count half
    assert math.isnan(calibration.auroc([0.1, 0.2], [1, 1]))
    assert calibration.ece([0.8, 0.8], [1, 0]) == pytest.approx(0.3)
    assert calibration.accuracy_at([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 0.5) == 1.0
    cov, acc = calibration.risk_coverage([0.9, 0.1], [1, 0])
    assert list(cov) == [0.5, 1.0] and list(acc) == [1.0, 0.5]


def test_the_ece_interval_holds_the_ece_of_a_well_calibrated_method():
    # Probabilities that mean what they say, 300 answers: the resamples' ECE is biased upward, so
    # a plain percentile interval started above the point in 4 of these 20 sets. Not any more.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p = rng.uniform(0, 1, 300)
        y = (rng.uniform(0, 1, 300) < p).astype(float)
        m = calibration.with_intervals(p, y, n=300)
        lo, hi = m["ece_ci"]
        assert 0.0 <= lo <= m["ece"] <= hi, (seed, m["ece"], m["ece_ci"])
        lo, hi = m["auroc_ci"]  # the others stay plain percentile intervals
        assert lo <= m["auroc"] <= hi


def test_cross_validation_never_scores_an_answer_with_a_fit_that_saw_it():
    # Labels are noise: a fit that saw its own answers would look better than chance.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X, y = rng.normal(size=(60, 25)), (rng.random(60) < 0.5).astype(float)
        in_sample = calibration.Logistic(()).fit(X, y, l2=0.01).predict(X)
        held = calibration.out_of_fold(X, y, l2=0.01)
        assert calibration.auroc(in_sample, y) > 0.8
        assert calibration.auroc(held, y) < 0.65


def questions(n):
    return [
        {
            "id": f"q{i}",
            "question": f"What is the capital of France ({i})?",
            "references": ["Paris"],
            "topic": "t",
        }
        for i in range(n)
    ]


def test_eval_records_carry_signals_and_the_summary_reports_methods_held_out(tmp_path):
    # right answers come with high log-probabilities, wrong ones with low: a method must see it
    engine = fake_engine(["Paris.", "Lyon.", "Paris, France.", "Rome."], [-0.1, -2.0, -0.4, -1.5])
    out = tmp_path / "r.jsonl"
    records = evaluate.run(engine, questions(40), out, progress=False, extra=("samples",), samples=2)
    rec = records[0]["confidence"]
    assert rec["signals"]["mean_logprob"] == pytest.approx(-0.1) and rec["signals"]["n_samples"] == 2
    assert rec["confidence_method"] == "free" and rec["confidence"] is None  # nothing calibrated yet
    assert rec["costs"]["samples_s"] > 0 and rec["settings"]["samples"]["k"] == 2
    assert len(rec["samples"]) == 2 and all(isinstance(t, str) for t in rec["samples"])
    assert {"sample_consistency", "eigv"} <= set(rec["signals"])
    trust = evaluate.confidence_report(records, engine.sha256, abstain_below=0.5)
    rep = trust["confidence"]
    assert {"mean_logprob", "free", "agreement", "combined"} <= set(rep) and "p_true" not in rep
    assert rep["mean_logprob"]["auroc"] == 1.0 and rep["mean_logprob"]["how"] == "5-fold cross-validation"
    lo, hi = rep["free"]["auroc_ci"]
    assert lo <= rep["free"]["auroc"] <= hi
    a = trust["abstention"]
    assert (
        a["answered"] == pytest.approx(0.5)
        and a["accuracy_answered"] == 1.0
        and a["hallucinated_after"] == 0.0
    )
    text = evaluate.format_summary(evaluate.summarize(records) | trust)
    assert "AUROC" in text and "answer only when sure" in text and "free signals" in text


def test_a_rerun_asking_for_more_signals_keeps_the_answers_and_adds_them(tmp_path):
    engine = fake_engine(["Paris."], [-0.1])
    out = tmp_path / "r.jsonl"
    evaluate.run(engine, questions(3), out, progress=False)
    calls = engine.backend.calls
    again = evaluate.run(engine, questions(3), out, progress=False, extra=("p_true",))
    assert all("p_true" in r["confidence"]["signals"] for r in again)
    assert engine.backend.calls == calls  # no answer generated again: only the new signal's pass
    assert evaluate.run(engine, questions(3), out, progress=False, extra=("p_true",)) == again  # done now


def test_a_signal_added_later_is_computed_from_the_samples_the_record_kept(tmp_path):
    engine = fake_engine(["Paris.", "Lyon."], [-0.1, -2.0])
    out = tmp_path / "r.jsonl"
    first = evaluate.run(engine, questions(3), out, progress=False, extra=("samples",), samples=2)
    # as a record written before "eigv" existed
    old = []
    for r in jsonl.read(out)[0]:
        del r["confidence"]["signals"]["eigv"]
        old.append(r)
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    calls = engine.backend.calls
    again = evaluate.run(engine, questions(3), out, progress=False, extra=("samples",), samples=2)
    assert engine.backend.calls == calls  # nothing sampled again
    assert [r["confidence"]["signals"]["eigv"] for r in again] == [
        r["confidence"]["signals"]["eigv"] for r in first
    ]
    # adding P(True) alone keeps the samples and how they were made
    with_p = evaluate.run(engine, questions(3), out, progress=False, extra=("p_true",))
    assert [r["confidence"]["samples"] for r in with_p] == [r["confidence"]["samples"] for r in first]
    assert all(r["confidence"]["settings"]["samples"]["k"] == 2 for r in with_p)
    calls = engine.backend.calls
    both = evaluate.run(engine, questions(3), out, progress=False, extra=("samples", "p_true"), samples=2)
    assert engine.backend.calls == calls and both == with_p  # all there: nothing asked again
    # other sampling settings: the kept samples do not count, the question is sampled anew
    evaluate.run(engine, questions(3), out, progress=False, extra=("samples",), samples=3)
    assert engine.backend.calls > calls


def test_saved_calibration_gives_each_answer_its_probability(tmp_path):
    engine = fake_engine(["Paris.", "Lyon."], [-0.1, -2.0])
    records = evaluate.run(engine, questions(20), tmp_path / "a.jsonl", progress=False)
    X, y, ids = selective.labelled(records, confidence.METHODS["free"].signals)
    cal = calibration.fit(
        "free", confidence.METHODS["free"].signals, X, y, engine.sha256, {"question_ids": ids}
    )
    calibration.save(cal)  # into the session's people's-data folder (conftest): eval's answers
    calibration.save(cal, style=calibration.CHAT)  # and the page's, which read their own
    conf = confidence.of_stats(stats_of(engine, "Capital of France?"), engine.sha256)
    assert conf.calibration == cal.id and conf.p > 0.5 and conf.words == confidence.label(conf.p)
    # the eval records of other questions now carry it, and the summary uses it as held out
    other = [
        {"id": f"n{i}", "question": f"Name France's capital ({i})", "references": ["Paris"], "topic": "t"}
        for i in range(20)
    ]
    recs = evaluate.run(engine, other, tmp_path / "b.jsonl", progress=False)
    assert {r["confidence"]["calibration"] for r in recs} == {cal.id}
    assert all((r["confidence"]["confidence"] > 0.5) == (r["answer"] == "Paris.") for r in recs)
    assert selective.report(recs, engine.sha256)["free"]["how"].startswith(f"calibration {cal.id}")
    # on the questions it was fitted on, the summary cross-validates instead
    assert selective.report(records, engine.sha256)["free"]["how"] == "5-fold cross-validation"
    assert confidence.Confidence(0.2, "free", cal.id, "").abstains(0.5)
    assert not confidence.Confidence(None, "free", None, "").abstains(0.5)  # no number: never withheld


def test_a_sampled_calibration_is_held_out_only_for_as_many_samples(tmp_path):
    # five answers in turn: with 2 or 3 samples a question, both right and wrong answers come up
    engine = fake_engine(["Paris.", "Lyon.", "Paris.", "Rome.", "Paris."], [-0.1, -2.0, -0.3, -1.0, -0.2])
    fit_on = evaluate.run(
        engine, questions(20), tmp_path / "a.jsonl", progress=False, extra=("samples",), samples=2
    )
    X, y, ids = selective.labelled(fit_on, confidence.METHODS["eigv"].signals)
    made = fit_on[0]["confidence"]["settings"]["samples"]
    cal = calibration.fit("eigv", ("eigv",), X, y, engine.sha256, {"question_ids": ids, "samples": made})
    calibration.save(cal)
    other = [
        {"id": f"n{i}", "question": f"Name France's capital ({i})", "references": ["Paris"], "topic": "t"}
        for i in range(20)
    ]
    two = evaluate.run(engine, other, tmp_path / "b.jsonl", progress=False, extra=("samples",), samples=2)
    assert selective.report(two, engine.sha256)["eigv"]["how"].startswith(f"calibration {cal.id}")
    # the table says which rows were held out by the saved calibration and which cross-validated
    rows = tables.format_report(selective.report(two, engine.sha256)).splitlines()
    assert "* 5-fold cross-validation, where none applies" in rows[0]
    names = [r.split()[0] for r in rows[2:] if r.split()]
    assert "eigv" in names and "lexical*" in names  # lexical: no calibration of it here
    three = evaluate.run(engine, other, tmp_path / "c.jsonl", progress=False, extra=("samples",), samples=3)
    assert selective.report(three, engine.sha256)["eigv"]["how"] == "5-fold cross-validation"


def test_the_targets_judge_the_chosen_method_where_nothing_about_the_answers_chose_or_fitted_it(tmp_path):
    engine = fake_engine(["Paris.", "Lyon.", "Paris.", "Rome.", "Paris."], [-0.1, -2.0, -0.3, -1.0, -0.2])
    fit_on = evaluate.run(
        engine, questions(20), tmp_path / "a.jsonl", progress=False, extra=("samples",), samples=2
    )
    names = confidence.METHODS[confidence.CHOSEN].signals
    X, y, ids = selective.labelled(fit_on, names)
    made = fit_on[0]["confidence"]["settings"]["samples"]
    cal = calibration.fit(
        confidence.CHOSEN, names, X, y, engine.sha256, {"question_ids": ids, "samples": made}
    )
    calibration.save(cal)
    other = [
        {"id": f"n{i}", "question": f"Name France's capital ({i})", "references": ["Paris"], "topic": "t"}
        for i in range(20)
    ]
    fresh = evaluate.run(engine, other, tmp_path / "b.jsonl", progress=False, extra=("samples",), samples=2)

    def targets(records):
        report = evaluate.confidence_report(records, engine.sha256)
        text = evaluate.format_summary(evaluate.summarize(records) | report)
        return next(line for line in text.splitlines() if line.startswith("targets:"))

    assert f"({confidence.CHOSEN}, chosen beforehand;" in targets(fresh)
    abstention = evaluate.confidence_report(fresh, engine.sha256, abstain_below=0.5)["abstention"]
    assert abstention["method"] == confidence.CHOSEN
    # on the answers it was fitted on, the targets fall back to a choice made on them
    assert "chosen beforehand" not in targets(fit_on)


def test_the_summary_says_when_a_calibration_runs_high_on_other_questions(tmp_path):
    # fitted where four answers in five are right; judged where one in five is
    engine = fake_engine(["Paris.", "Paris.", "Paris.", "Paris.", "Lyon."], [-0.1, -0.2, -0.1, -0.3, -2.0])
    fit_on = evaluate.run(engine, questions(40), tmp_path / "a.jsonl", progress=False)
    names = confidence.METHODS["free"].signals
    X, y, ids = selective.labelled(fit_on, names)
    calibration.save(calibration.fit("free", names, X, y, engine.sha256, {"question_ids": ids}))
    lyon = [
        {"id": f"n{i}", "question": f"Name a city on the Rhone ({i})", "references": ["Lyon"], "topic": "t"}
        for i in range(40)
    ]
    hard = evaluate.run(engine, lyon, tmp_path / "b.jsonl", progress=False)
    text = evaluate.format_summary(evaluate.summarize(hard) | evaluate.confidence_report(hard, engine.sha256))
    line = next(x for x in text.splitlines() if x.startswith("calibration in the large, free"))
    assert "20.0% right" in line and "run high on these questions" in line and "eval --calibrate" in line, (
        line
    )
    # on questions like those it was fitted on, it only reports
    like = [dict(q, id=f"p{i}") for i, q in enumerate(questions(40))]
    same = evaluate.run(engine, like, tmp_path / "c.jsonl", progress=False)
    text = evaluate.format_summary(evaluate.summarize(same) | evaluate.confidence_report(same, engine.sha256))
    assert "calibration in the large, free" in text and "run high" not in text
    # where no answer is right (a hard set, answered as the page answers): no AUROC, no multiple
    none = [dict(q, id=f"z{i}", references=["Marseille"]) for i, q in enumerate(questions(20))]
    wrong = evaluate.run(engine, none, tmp_path / "d.jsonl", progress=False)
    text = evaluate.format_summary(
        evaluate.summarize(wrong) | evaluate.confidence_report(wrong, engine.sha256)
    )
    assert "targets: not judged: 0% of these answers are right" in text and "0.0% right" in text


def test_ratings_recalibrate_with_signals_recomputed_by_teacher_forcing(tmp_path):
    engine = fake_engine(["Paris."], [-0.3])
    prov = {"model": "fake", "model_sha256": engine.sha256, "system": ""}
    rated = [
        ratings.make_record(f"Capital of France {i}?", "Paris." if i % 2 else "Lyon.", prov, verdict=v)
        for i, v in enumerate(["correct", "wrong"] * 8)
    ]
    rated.append(
        ratings.make_record("Other model?", "x", {"model": "m", "model_sha256": "other"}, thumbs="up")
    )
    grounded = ratings.make_record("Newest ferry?", "Marigold Dawn [1]", prov, verdict="correct")
    rated.append(grounded | {"library": {"library": "town", "looked_up": True, "sources": []}})
    # notebook 03's ratings of eval's answers: not the chat answers the calibration is for
    rated.append(ratings.make_record("Capital of Peru?", "Lima.", prov, verdict="correct", source="notebook"))
    kept, signals, forced = confidence.rated_signals(engine, rated)
    # neither the other model's rating, the answer written from a library's passages nor the
    # notebook's rating is used
    assert len(kept) == 16 and forced == 16
    cal, path, _ = confidence.recalibrate(engine, rated, "mean_logprob", root=tmp_path)
    assert path.is_file() and cal.fitted_on["source"] == "ratings" and cal.fitted_on["n"] == 16
    assert path.parent.name == calibration.CHAT  # ratings are of the page's answers
    # a rating kept with its signals before type_match existed gains it from its answer
    kept_before = [{k: v for k, v in sig.items() if k != "type_match"} for sig in signals]
    old = [r | {"confidence_signals": sig} for r, sig in zip(kept, kept_before, strict=True)]
    kept, signals, forced = confidence.rated_signals(engine, old)
    assert forced == 0 and [s["type_match"] for s in signals[:2]] == [1.0, 1.0]
    fewer = [r | {"confidence_signals": {"mean_logprob": -0.3}} for r in kept]  # recomputed
    assert confidence.rated_signals(engine, fewer)[2] == 16
    assert confidence.recalibrate(engine, old, "free", root=tmp_path)[0].fitted_on["n"] == 16
    with pytest.raises(KitError, match="free signals"):
        confidence.recalibrate(engine, rated, "agreement", root=tmp_path)


FRANCE = "What is the capital of France?"


def chat(*args):
    cmd = [sys.executable, "-m", "research", "chat", "--temperature", "0", "--max-tokens", "24", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.model
def test_chat_json_carries_the_calibrated_confidence_of_the_bundled_model():
    r = chat("-p", FRANCE, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["confidence_method"] == "free" and out["calibration"].startswith("free@")
    assert 0 < out["confidence"] < 1 and out["confidence_words"] == confidence.label(out["confidence"])
    assert out["signals"]["n_tokens"] == out["completion_tokens"]


@pytest.mark.model
def test_answer_only_when_sure_withholds_and_still_shows_the_answer_apart():
    sure = chat("-p", FRANCE, "--abstain-below", "1")  # nothing is that sure
    assert sure.returncode == 0, sure.stderr
    assert sure.stdout.strip() == "I'm not sure."
    assert "withheld" in sure.stderr and "the model's answer was:" in sure.stderr
    as_json = json.loads(chat("-p", FRANCE, "--abstain-below", "1", "--json").stdout)
    assert as_json["abstained"] and as_json["shown"] == "I'm not sure." and as_json["answer"].strip()
    never = json.loads(chat("-p", FRANCE, "--abstain-below", "0", "--json").stdout)
    assert not never["abstained"] and never["shown"] == never["answer"]


def calibrated_fake(tmp_path, answers, logprobs, name="fake"):
    """A fake engine with a calibration saved for it: right answers come with high log-probabilities."""
    engine = fake_engine(answers, logprobs, name)
    X, y = separable(80)
    cal = calibration.fit("free", ("mean_logprob",), X, y, engine.sha256, {"source": "test"})
    cal.method = confidence.DEFAULT  # the page's method, reading one signal here
    calibration.save(cal, style=calibration.CHAT)  # the page's answers read a chat calibration
    return engine


def page_ask(host, question, session="s1"):
    from research.page import text as page_text

    history = [{"role": "user", "content": page_text.shown(question)}]
    *_, last = host.respond(history, "Be brief.", Sampling(temperature=0, max_tokens=200), session)
    return last


def test_page_answer_shows_its_calibrated_confidence_in_words_and_number(tmp_path):
    from research.page import host as chat

    host = chat.ModelHost()
    host.engine = calibrated_fake(tmp_path, ["Paris.", "Lyon."], [-0.1, -2.5], "page-conf")
    sure = chat.text_of(page_ask(host, "Capital of France?")[-1]["content"])
    doubt = chat.text_of(page_ask(host, "Capital of France?")[-1]["content"])
    assert sure.startswith("Paris.")
    assert re.search(r"<sub><span class=\"kit-visual\">◷ (likely|probably) right, \d+ % · \d+ prompt", sure)
    assert doubt.startswith("Lyon.") and re.search(r">◷ likely wrong, check this: \d+ % · ", doubt)


def test_answer_only_when_sure_on_the_page_withholds_then_shows_on_request(tmp_path):
    from research.page import host as chat

    hostile = 'Lyon <img src="http://evil.example/x.png">'
    host = chat.ModelHost()
    host.engine = calibrated_fake(tmp_path, [hostile, "Paris."], [-2.5, -0.1], "page-sure")
    host.answer_only_when_sure("s1", True)
    history = page_ask(host, "Capital of France?")
    said = chat.text_of(history[-1]["content"])
    assert said.startswith(chat.NOT_SURE + '\n\n<sub><span class="kit-visual">◷ likely wrong, check this: ')
    assert "Lyon" not in said
    with pytest.raises(KitError, match="withheld"):
        host.rate(history, thumbs="down", path=tmp_path / "r.jsonl")
    assert host.withheld(history)["withheld"] and host.withheld([]) is None  # the page's button
    shown = host.show_anyway(history)
    text = chat.text_of(shown[-1]["content"])
    assert text.startswith("Lyon &lt;img") and "<img" not in text and "likely wrong" in text
    assert shown[-1]["metadata"] == history[-1]["metadata"]  # still the same answer, rateable now
    host.rate(shown, thumbs="down", path=tmp_path / "r.jsonl")
    (rated,), _ = ratings.read(tmp_path / "r.jsonl")
    assert rated["answer"] == hostile and rated["confidence_signals"]["mean_logprob"] == pytest.approx(-2.5)
    with pytest.raises(KitError, match="not withheld"):
        host.show_anyway(shown)
    assert host.withheld(shown) is None  # shown: the button goes
    # a sure answer is shown; another session, which did not turn the mode on, sees everything
    assert chat.text_of(page_ask(host, "Capital of France?")[-1]["content"]).startswith("Paris.")
    assert chat.text_of(page_ask(host, "Capital of France?", "s2")[-1]["content"]).startswith("Lyon")
    host.answer_only_when_sure("s1", False)
    assert chat.text_of(page_ask(host, "Capital of France?")[-1]["content"]).startswith("Paris.")


def test_evaluation_forgets_the_cache_before_each_question(tmp_path):
    engine = fake_engine(["Paris."], [-0.1])
    evaluate.run(engine, questions(5), tmp_path / "r.jsonl", progress=False)
    assert engine.backend.resets == 5 == engine.backend.calls


def test_an_unknown_method_or_signal_is_one_line_not_a_traceback():
    for args in (["--method", "nope"], ["--confidence", "nope"], ["--abstain-below", "1.5"]):
        r = subprocess.run(
            [sys.executable, "-m", "research", "eval", *args], capture_output=True, text=True, cwd=ROOT
        )
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and repr(args[1]) in line


def test_the_nested_choice_judges_the_best_method_on_answers_it_was_not_chosen_on():
    """Picked on other folds, an informative signal still wins and keeps its AUROC; when every
    signal is noise, the nested figure stays near chance where the best-of-many figure flatters."""
    import numpy as np

    rng = np.random.default_rng(3)
    free = {k: 0.0 for k in confidence.FREE}

    def recs(informative: bool) -> list[dict]:
        out = []
        for i in range(200):
            right = bool(i % 2)
            sig = {k: float(rng.normal()) for k in free}
            sig |= {k: float(rng.normal()) for k in confidence.SAMPLED}
            if informative:
                sig["lexical_agreement"] = float(right) + 0.3 * float(rng.normal())
            out.append({"id": f"q{i}", "scores": {"contains": right}, "confidence": {"signals": sig}})
        return out

    good = selective.selected(recs(True), bootstrap=50)
    assert good["auroc"] > 0.9 and set(good["chosen"]) <= {"lexical", "lexical_logprob", "combined"}
    assert "p_true" not in good["chosen"]  # a method whose signal no record carries does not compete
    noise = recs(False)
    nested = selective.selected(noise, bootstrap=50)["auroc"]
    best_of_many = max(m["auroc"] for m in selective.report(noise, bootstrap=50).values())
    assert nested < best_of_many and abs(nested - 0.5) < 0.1
    text = tables.format_report(selective.report(noise, bootstrap=50), None, selective.selected(noise, 50))
    assert "nested 5-fold cross-validation" in text and "targets: best AUROC" in text
    assert selective.selected(noise[:5]) is None  # too few answers to choose and judge
    # repeated with other folds: one figure per repetition, their mean reported with their range
    first = selective.selected(noise, bootstrap=50, repeats=1)["auroc"]  # the first repetition's folds
    four = selective.selected(noise, bootstrap=50, repeats=4)
    lo, hi = four["auroc_range"]
    assert lo <= first <= hi and lo < hi and len(four["chosen"]) == 4 * 5


def test_baselines_read_no_signal_of_the_model_and_stand_under_the_methods():
    """A constant at the share right: AUROC 0.5, ECE 0, Brier share x (1 - share). A topic or
    difficulty label that decides the answer sorts perfectly. The table marks an AUROC whose
    interval holds 0.5 and says so in the targets."""
    recs = [
        {
            "id": f"q{i}",
            "answer": "word " * (1 + i % 3),
            "topic": "sport" if i % 2 else "art",
            "difficulty": "easy" if i % 2 else "hard",
            "scores": {"contains": bool(i % 2)},
        }
        for i in range(40)
    ]
    b = selective.baselines(recs, bootstrap=50)
    assert list(b) == ["constant", "length", "difficulty", "topic"]
    assert b["constant"]["auroc"] == 0.5 and b["constant"]["ece"] < 0.01
    assert b["constant"]["brier"] == pytest.approx(0.25, abs=0.01)
    assert b["topic"]["auroc"] == b["difficulty"]["auroc"] == 1.0 and b["topic"]["brier"] < 0.1
    assert "difficulty" not in selective.baselines([dict(r, difficulty=None) for r in recs], bootstrap=50)
    assert selective.baselines(recs[:5]) == {}  # too few answers to hold any out
    text = tables.format_report({"free": b["constant"] | {"cost": "free"}}, None, None, b)
    lines = text.splitlines()
    assert "Brier" in lines[1] and any(line.startswith("baselines") for line in lines)
    assert any(line.startswith("topic ") and "1.00 [1.00-1.00] " in line for line in lines)
    assert "0.50 [0.50-0.50]~" in text and "~: the AUROC's 95 % interval holds 0.5" in text
    assert "holds chance" in text.splitlines()[-1]


def test_the_threshold_is_tuned_on_one_half_and_its_cost_taken_on_the_other():
    """Half the answers tune the threshold, the other half score it: a threshold that only the tuning
    half favours is still scored on answers that did not pick it."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(40):
        right = bool(i % 2)
        sig = {"mean_logprob": float(right) + float(rng.normal())}
        scores = {"contains": right, "hallucinated": not right}
        recs.append({"id": f"q{i}", "scores": scores, "confidence": {"signals": sig}})
    got = selective.tuned_elsewhere(recs, "mean_logprob", [0.3, 0.5, 0.7], 3)
    assert got["n_tune"] == got["n_scored"] == 20 and got["threshold"] in (0.3, 0.5, 0.7)
    assert got["tuning"][got["threshold"]] == min(got["tuning"].values())
    assert got["answer_all"] == pytest.approx(3 * 0.5)  # half wrong, each stated as a fact, 3 each
    held = selective.held_out(recs, "mean_logprob")
    tune = calibration.folds(held["y"], 2) == 0
    kept = held["p"][~tune] >= got["threshold"]
    wrong = held["y"][~tune] == 0
    assert got["cost"] == pytest.approx((3 * (wrong & kept).sum() + (~kept).sum()) / 20)
    assert selective.tuned_elsewhere(recs, "lexical", [0.5], 3) is None  # no such signal here
    row = tables.table_row(selective.report(recs, bootstrap=50), selective.baselines(recs, 50), "free")
    assert row == {}  # the free method's signals are not in these records
    row = tables.table_row(
        selective.report(recs, bootstrap=50), selective.baselines(recs, 50), "mean_logprob"
    )
    assert row["answers"] == 40 and "AUROC length" in row and row["Brier constant"].startswith("0.25")
