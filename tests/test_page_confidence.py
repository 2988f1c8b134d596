"""The page's confidence, through the real page on the bundled model (gradio_client): each answer
says how likely it is to be right, and "answer only when sure" withholds the doubtful ones with a
way to see them anyway."""

import json
import re

import pytest
from test_page import answer_text, ask_args, text

from research import confidence
from research.page import host as chat

pytestmark = [pytest.mark.page, pytest.mark.model]

#: Questions the bundled model answers greedily on the page's settings: one it answers right and
#: sure, and ones it answers with little confidence (checked by the tests, not assumed).
SURE = "What is the capital of France?"
DOUBTFUL = ("Who was the mayor of Quellport in 1847?", "Who won the 1923 Tour de France?")
SHOWN = re.compile(
    r"<sub>(?:<span class=\"kit-visual\">)?◷ "
    r"((?:likely|probably) right|unsure, check this|likely wrong, check this)[,:] (\d+) % · "
)


def shipped():
    from research.confidence import calibration
    from research.hashing import cached_sha256
    from research.models.catalog import resolve

    return calibration.load(cached_sha256(resolve(None).path), confidence.DEFAULT, calibration.CHAT)


def figures(message) -> tuple[str, int]:
    """The confidence words and percentage at the head of an answer's figures line."""
    m = SHOWN.search(text(message))
    assert m, text(message)
    return m.group(1), int(m.group(2))


def test_each_answer_shows_its_calibrated_confidence_in_words_and_number(page):
    client = page.client()
    history, _ = client.predict(*ask_args(SURE), api_name="/ask")
    words, percent = figures(history[-1])
    bounds = shipped().words  # the words start where the shipped calibration says they may
    assert confidence.label(percent / 100, bounds).startswith(words)  # the words match the number
    assert "Paris" in answer_text(history[-1])
    sure_p = percent
    lows = [figures(client.predict(*ask_args(q), api_name="/ask")[0][-1])[1] for q in DOUBTFUL]
    assert min(lows) < sure_p  # the number moves with the answer: not a constant


def test_answer_only_when_sure_withholds_and_shows_the_answer_on_request(page):
    client = page.client()
    plain = {q: client.predict(*ask_args(q), api_name="/ask")[0][-1] for q in (SURE, *DOUBTFUL)}
    client.predict(True, api_name="/answer_only_when_sure")
    withheld = 0
    for q, before in plain.items():
        history, _ = client.predict(*ask_args(q), api_name="/ask")
        words, percent = figures(history[-1])
        assert (words, percent) == figures(before)  # the same greedy answer, the same confidence
        if percent < confidence.SURE * 100:
            withheld += 1
            assert answer_text(history[-1]).strip() == chat.NOT_SURE
            with pytest.raises(Exception, match="withheld"):
                client.predict(history, 2, "wrong", "", api_name="/rate")
            shown = client.predict(history, api_name="/show_anyway")
            assert answer_text(shown[-1]) == answer_text(before) != chat.NOT_SURE
            assert "Saved" in client.predict(shown, 2, "wrong", "", api_name="/rate")
            rated = json.loads(page.ratings.read_text().splitlines()[-1])
            assert rated["answer"] == answer_text(before) and rated["confidence_signals"]["n_tokens"] > 0
        else:
            assert answer_text(history[-1]) == answer_text(before)
    assert withheld >= 1
    client.predict(False, api_name="/answer_only_when_sure")
    q = next(q for q in DOUBTFUL if figures(plain[q])[1] < confidence.SURE * 100)
    history, _ = client.predict(*ask_args(q), api_name="/ask")
    assert answer_text(history[-1]) == answer_text(plain[q])  # off again: every answer shown


#: A question of no language the model saw: its words are unlike every question the shipped
#: calibration was fitted on (checked: far beyond the farthest 1 % of theirs).
UNLIKE = "Qxzv blorptangle frumious zzyzx wug?"


def test_a_question_unlike_the_calibrations_shows_words_and_no_number(page):
    client = page.client()
    history, _ = client.predict(*ask_args(UNLIKE), api_name="/ask")
    shown = text(history[-1])
    assert (
        confidence.UNLIKE in shown and not SHOWN.search(shown) and not re.search(r"check this: \d+ %", shown)
    )
    client.predict(True, api_name="/answer_only_when_sure")  # unknown is not sure: withheld
    try:
        history, _ = client.predict(*ask_args(UNLIKE), api_name="/ask")
        assert answer_text(history[-1]).strip() == chat.NOT_SURE
    finally:
        client.predict(False, api_name="/answer_only_when_sure")


def test_the_model_line_says_on_what_the_confidence_was_fitted(page):
    status = page.client().predict("smollm2-135m-q4_1", "", api_name="/load_model")
    cal = shipped()
    n, sets = cal.fitted_on["n"], len(cal.fitted_on["sets"])
    assert f"confidence (free) fitted on {n} chat answers of this model to {sets} question sets" in status
    longtail = cal.fitted_on["sets"]["longtail"]
    assert f"longtail 200, {round(100 * longtail['right'] / 200)} % right" in status
    assert "'probably right' from" in status
