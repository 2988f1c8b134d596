"""The notebook rater: driven through its widgets as a person would, ratings land in the shared file."""

import pytest

from research import ratings
from research.errors import KitError
from research.rater import ABRater, Rater, parse_quick


def records(model="m", answers=("Paris.", "Rome.", "I don't know.")):
    return [
        {
            "id": f"q{i}",
            "question": f"Question {i}?",
            "answer": a,
            "references": ["Paris"],
            "model": model,
            "settings": {"temperature": 0},
            "model_sha256": "ab" * 32,
        }
        for i, a in enumerate(answers)
    ]


def test_quick_entry():
    assert parse_quick("4c nice one") == (4, "correct", "nice one")
    assert parse_quick("h") == (None, "hallucinated", "")
    assert parse_quick("2") == (2, None, "")
    for bad in ("9c", "4z", "", "x"):
        with pytest.raises(KitError):
            parse_quick(bad)


def test_rating_by_buttons_and_by_keyboard(tmp_path):
    path = tmp_path / "r.jsonl"
    rater = Rater(records(), rater="ann", path=path)
    assert "Question" in rater.text.value and "model" not in rater.text.value  # the model is hidden
    first = rater.current["id"]
    rater.score.value, rater.verdict.value, rater.comment.value = 5, "correct", "spot on"
    rater.save_btn.click()
    second = rater.current["id"]
    rater.quick.value = "1h made up"  # Enter in the quick box saves and moves on
    got, bad = ratings.read(path)
    assert bad == 0 and [(r["question_id"], r["score"], r["verdict"], r["comment"]) for r in got] == [
        (first, 5, "correct", "spot on"),
        (second, 1, "hallucinated", "made up"),
    ]
    assert all(r["rater"] == "ann" and r["source"] == "notebook" and r["model"] == "m" for r in got)
    rater.quick.value = "9z"  # Enter in the quick box
    assert "cannot read" in rater.status.value and len(ratings.read(path)[0]) == 2  # nothing saved
    with pytest.raises(KitError, match="no question 'nope'"):
        rater.rate("nope", score=3)


def test_blind_ab(tmp_path):
    path = tmp_path / "r.jsonl"
    ab = ABRater(
        records("small"), records("big", ("Paris", "Paris", "Paris")), rater="bob", path=path, seed=1
    )
    assert len(ab.pairs) == 3 and "model-x" not in ab.text.value and "model-y" not in ab.text.value
    a, b = ab.pairs[0]
    ab.buttons[0].click()  # "A is better"
    ab.quick.value = "t"  # Enter in the quick box
    got, _ = ratings.read(path)
    assert len(got) == 4
    assert {(r["model"], r["ab"]["result"]) for r in got[:2]} == {
        (a["model"], "better"),
        (b["model"], "worse"),
    }
    assert {r["ab"]["result"] for r in got[2:]} == {"tie"}
