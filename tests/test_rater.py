"""The notebook rater: driven through its widgets as a person would, ratings land in the shared file."""

import pytest

from research.errors import KitError
from research.ratings import store as ratings
from research.ratings.rater import ABRater, Rater, parse_quick, tally


def records(model="m", answers=("Paris.", "Rome.", "I don't know."), run=None, label=None):
    return [
        {
            "id": f"q{i}",
            "question": f"Question {i}?",
            "answer": a,
            "references": ["Paris"],
            "model": model,
            "model_file": f"{model}-file.gguf",
            "label": label or model,
            "sampling": {"temperature": 0},
            "model_sha256": "ab" * 32,
            "prompt_format": "chatml",
            "system": "Answer briefly.",
            "run": run or f"run-of-{model}",
        }
        for i, a in enumerate(answers)
    ]


def visible_text(widget) -> str:
    """Everything a person sees in a widget tree: texts, labels, options, placeholders."""
    parts = []
    for attr in ("value", "description", "placeholder", "tooltip", "options"):
        v = getattr(widget, attr, None)
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, (list, tuple)):
            parts += [str(o) for o in v]
    for child in getattr(widget, "children", ()):
        parts.append(visible_text(child))
    return "\n".join(parts)


def test_quick_entry():
    assert parse_quick("4c nice one") == (4, "correct", "nice one")
    assert parse_quick("h") == (None, "hallucinated", "")
    assert parse_quick("2") == (2, None, "")
    for bad in ("9c", "4z", "", "x"):
        with pytest.raises(KitError):
            parse_quick(bad)


def test_rating_by_buttons_and_by_keyboard(tmp_path):
    path = tmp_path / "r.jsonl"
    rater = Rater(records("secret-model"), rater="ann", path=path)
    shown = visible_text(rater.widget)
    assert "Question" in shown
    for hidden in ("secret-model", "run-of-secret-model", "ab" * 32, "chatml", "Answer briefly."):
        assert hidden not in shown  # nothing says which model or run gave the answer
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
    assert all(
        r["rater"] == "ann" and r["source"] == "notebook" and r["model"] == "secret-model" for r in got
    )
    assert all(r["run"] == "run-of-secret-model" and r["settings"] == {"temperature": 0} for r in got)
    rater.quick.value = "9z"  # Enter in the quick box
    assert "cannot read" in rater.status.value and len(ratings.read(path)[0]) == 2  # nothing saved
    with pytest.raises(KitError, match="no answer to question .nope."):
        rater.rate("nope", score=3)


def test_two_runs_in_one_file_each_rating_lands_on_its_own_answer(tmp_path):
    path = tmp_path / "r.jsonl"
    both = records("m", ("Paris.", "Rome.", "Oslo."), run="greedy") + records(
        "m", ("Lyon.", "Nice.", "Metz."), run="sampled"
    )
    rater = Rater(both, rater="ann", path=path)
    with pytest.raises(KitError, match="2 runs answered question 'q1'"):
        rater.rate("q1", score=3)  # ambiguous: refused, nothing saved
    rater.rate("q1", run="sampled", score=3)
    rater.rate("q1", run="greedy", score=5)
    got, _ = ratings.read(path)
    assert [(r["run"], r["answer"], r["score"]) for r in got] == [
        ("sampled", "Nice.", 3),
        ("greedy", "Rome.", 5),
    ]
    while rater.current is not None:  # the widgets rate whatever is shown, run and all
        current = rater.current
        rater.quick.value = "4c"
        assert ratings.read(path)[0][-1]["answer"] == current["answer"]
        assert ratings.read(path)[0][-1]["run"] == current["run"]


def test_blind_ab(tmp_path):
    path = tmp_path / "r.jsonl"
    ab = ABRater(
        records("tiny-model", run="r-tiny", label="tiny"),
        records("huge-model", ("Paris", "Paris", "Paris"), run="r-huge", label="huge"),
        rater="bob",
        path=path,
        seed=1,
    )
    assert len(ab.pairs) == 3
    for hidden in ("tiny", "huge", "r-tiny", "r-huge"):
        assert hidden not in visible_text(ab.widget)
    a, b = ab.pairs[0]
    ab.buttons[0].click()  # "A is better"
    ab.quick.value = "t"  # Enter in the quick box
    got, _ = ratings.read(path)
    assert len(got) == 2  # one record per choice
    first = got[0]["ab"]
    assert first["result"] == "A"
    assert first["shown"]["A"]["run"] == a["run"] and first["shown"]["B"]["run"] == b["run"]
    assert first["shown"]["A"]["answer"] == a["answer"] and got[0]["question_id"] == a["id"]
    assert got[1]["ab"]["result"] == "tie"
    t = tally(got)
    [(pair, counts)] = t.items()
    assert pair == ("huge", "tiny") and counts["n"] == 2 and counts["tie"] == 1
    assert counts["wins"][a["label"]] == 1 and counts["wins"][b["label"]] == 0


def test_ab_refuses_mixed_or_identical_runs(tmp_path):
    both = records("m", run="x") + records("m", run="y")
    with pytest.raises(KitError, match="holds 2 runs"):
        ABRater(both, records("n"), rater="bob", path=tmp_path / "r.jsonl")
    with pytest.raises(KitError, match="same run"):
        ABRater(records("m"), records("m"), rater="bob", path=tmp_path / "r.jsonl")
