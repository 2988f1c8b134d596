"""Rating answers by hand in a notebook (ipywidgets): one at a time, the model hidden.

Keyboard: Tab moves between the buttons (Space or Enter presses them); the quick box takes
"4c" (score 4, correct), "2h" (score 2, hallucinated), "p", "w", "r" (partly correct, wrong,
refused), optionally followed by a comment, and Enter saves and moves on. In the blind A/B
mode the quick box takes "a", "b", "t" (tie) or "x" (both wrong).
"""

from __future__ import annotations

import html
import random

import ipywidgets as w

from research.errors import KitError
from research.ratings import store as ratings

VERDICT_KEYS = {"c": "correct", "p": "partly correct", "w": "wrong", "h": "hallucinated", "r": "refused"}
AB_KEYS = {"a": "A", "b": "B", "t": "tie", "x": "both wrong"}


def parse_quick(text: str) -> tuple[int | None, str | None, str]:
    """`"4c nice"` -> (4, "correct", "nice"); KitError when it cannot be read."""
    head, _, comment = text.strip().partition(" ")
    score = int(head[0]) if head[:1].isdigit() else None
    rest = head[1:] if score is not None else head
    if (
        (score is not None and not 1 <= score <= 5)
        or (rest and rest not in VERDICT_KEYS)
        or (not rest and score is None)
    ):
        raise KitError(f"cannot read {text!r}: type a score 1-5 and/or c, p, w, h, r (e.g. 4c)")
    return score, VERDICT_KEYS.get(rest), comment.strip()


def _key(record: dict) -> tuple:
    """An answer of an evaluation: its run and its question (a question id alone is ambiguous when
    a file holds several runs)."""
    return (record.get("run") or record.get("model"), record["id"])


def one_run(records: list[dict], what: str) -> list[dict]:
    """The records of exactly one run; KitError when `records` mixes runs."""
    runs = {r.get("run") or r.get("model") for r in records}
    if len(runs) > 1:
        raise KitError(
            f"{what} holds {len(runs)} runs; pass the records of one run (what evaluate.run returns)"
        )
    return records


class Rater:
    """Rate evaluation records one by one; each rating is appended to the shared ratings file.

    `records` may hold several runs (each answer is known by its run and question); the model
    and the run are never shown.
    """

    def __init__(self, records: list[dict], rater: str, path=None, seed: int = 0):
        self.items = [r for r in records if r.get("answer")]
        random.Random(seed).shuffle(self.items)  # the order says nothing about the model
        self.rater, self.path, self.pos, self.saved = rater, path, 0, 0
        self.by_key = {_key(r): r for r in self.items}
        self.score = w.ToggleButtons(
            options=[("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)], value=None, description="Score"
        )
        self.verdict = w.ToggleButtons(options=list(ratings.VERDICTS), value=None, description="Verdict")
        self.comment = w.Text(description="Comment")
        # continuous_update=False: the value changes (and saves) on Enter, not on every key.
        self.quick = w.Text(
            description="Quick", placeholder="4c, 2h, r … then Enter", continuous_update=False
        )
        self.show_refs = w.Checkbox(description="show reference answers", value=False)
        self.save_btn, self.skip_btn = (
            w.Button(description="Save and next", button_style="primary"),
            w.Button(description="Skip"),
        )
        self.text, self.status = w.HTML(), w.HTML()
        self.save_btn.on_click(lambda _: self._save_from_widgets())
        self.skip_btn.on_click(lambda _: self._advance())
        self.quick.observe(lambda c: c["new"].strip() and self._save_from_quick(), names="value")
        self.show_refs.observe(lambda _: self._show(), names="value")
        self.widget = w.VBox(
            [
                self.text,
                self.show_refs,
                self.score,
                self.verdict,
                self.comment,
                w.HBox([self.save_btn, self.skip_btn]),
                self.quick,
                self.status,
            ]
        )
        self._show()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def current(self) -> dict | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def _show(self) -> None:
        rec = self.current
        if rec is None:
            self.text.value = f"<b>All {len(self.items)} answers seen; {self.saved} rated.</b>"
            return
        refs = (
            f"<br><i>references: {html.escape(', '.join(rec['references']))}</i>"
            if self.show_refs.value
            else ""
        )
        self.text.value = (
            f"<small>{self.pos + 1} / {len(self.items)}</small><br><b>Q:</b> "
            f"{html.escape(rec['question'])}<br><b>A:</b> {html.escape(rec['answer'])}{refs}"
        )

    def rate(
        self,
        question_id: str,
        *,
        run: str | None = None,
        score: int | None = None,
        verdict: str | None = None,
        comment: str = "",
    ) -> dict:
        """Rate the answer of `run` (default: the only run holding the question) to `question_id`.

        KitError, and nothing saved, for an unknown question or one several runs answered.
        """
        found = [r for k, r in self.by_key.items() if k[1] == question_id and run in (None, k[0])]
        if not found:
            raise KitError(f"no answer to question {question_id!r} in these records: nothing was saved")
        if len(found) > 1:
            raise KitError(f"{len(found)} runs answered question {question_id!r}: name the run")
        rec = found[0]
        record = ratings.make_record(
            rec["question"],
            rec["answer"],
            rec,
            score=score,
            verdict=verdict,
            comment=comment,
            source="notebook",
            question_id=question_id,
            rater=self.rater,
        )
        ratings.append(record, self.path)
        self.saved += 1
        return record

    def _save_from_widgets(self) -> None:
        self._save(self.score.value, self.verdict.value, self.comment.value)

    def _save_from_quick(self) -> None:
        try:
            self._save(*parse_quick(self.quick.value))
        except KitError as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def _save(self, score, verdict, comment) -> None:
        if self.current is None:
            return
        try:
            rec = self.current
            self.rate(rec["id"], run=_key(rec)[0], score=score, verdict=verdict, comment=comment or "")
        except KitError as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        self.status.value = f"saved ({self.saved} so far)"
        self._advance()

    def _advance(self) -> None:
        self.pos += 1
        self.score.value = self.verdict.value = None
        self.comment.value = self.quick.value = ""
        self._show()


class ABRater:
    """Blind A/B: two runs' answers to the same question, in random order; pick the better one."""

    def __init__(self, run_a: list[dict], run_b: list[dict], rater: str, path=None, seed: int = 0):
        one_run(run_a, "run_a"), one_run(run_b, "run_b")
        if run_a and run_b and _key(run_a[0])[0] == _key(run_b[0])[0]:
            raise KitError("both sides of the A/B are the same run: compare two different runs")
        b_by_id = {r["id"]: r for r in run_b if r.get("answer")}
        rng = random.Random(seed)
        self.pairs = []
        for a in run_a:
            if a.get("answer") and a["id"] in b_by_id:
                pair = [a, b_by_id[a["id"]]]
                rng.shuffle(pair)
                self.pairs.append(pair)
        rng.shuffle(self.pairs)
        self.rater, self.path, self.pos, self.saved = rater, path, 0, 0
        self.text, self.status = w.HTML(), w.HTML()
        self.buttons = [
            w.Button(description=label) for label in ("A is better", "B is better", "Tie", "Both wrong")
        ]
        for btn, key in zip(self.buttons, "abtx", strict=True):
            btn.on_click(lambda _, k=key: self.choose(AB_KEYS[k]))
        self.quick = w.Text(
            description="Quick", placeholder="a, b, t or x, then Enter", continuous_update=False
        )
        self.quick.observe(lambda c: c["new"].strip() and self._quick(), names="value")
        self.widget = w.VBox([self.text, w.HBox(self.buttons), self.quick, self.status])
        self._show()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _show(self) -> None:
        if self.pos >= len(self.pairs):
            self.text.value = f"<b>All {len(self.pairs)} pairs seen; {self.saved} judged.</b>"
            return
        a, b = self.pairs[self.pos]
        self.text.value = (
            f"<small>{self.pos + 1} / {len(self.pairs)}</small><br><b>Q:</b> {html.escape(a['question'])}"
            f"<br><b>A:</b> {html.escape(a['answer'])}<br><b>B:</b> {html.escape(b['answer'])}"
        )

    def _quick(self) -> None:
        key = self.quick.value.strip().lower()[:1]
        self.quick.value = ""
        if key not in AB_KEYS:
            self.status.value = "type a, b, t or x"
            return
        self.choose(AB_KEYS[key])

    def choose(self, outcome: str) -> None:
        """Record the judgement of the current pair: one record, both answers in the order shown."""
        if self.pos >= len(self.pairs):
            return
        first, second = self.pairs[self.pos]
        record = ratings.make_ab_record(
            first["question"], (first, second), outcome, question_id=first["id"], rater=self.rater
        )
        ratings.append(record, self.path)
        self.saved += 1
        self.pos += 1
        self.status.value = f"saved ({self.saved} so far)"
        self._show()


def tally(records: list[dict]) -> dict:
    """Blind A/B choices counted per pair of runs: which side won how often, ties, both wrong.

    Returns {(label or run of one, of the other): {"wins": {label: n, ...}, "tie": n, "both wrong": n,
    "n": n}}; the pair's names are sorted, so A/B order on screen does not matter.
    """
    out: dict = {}
    for r in records:
        ab = r.get("ab") or {}
        shown = ab.get("shown")
        if not shown or ab.get("result") not in ratings.AB_RESULTS:
            continue
        names = {side: v.get("label") or v.get("run") or v.get("model") for side, v in shown.items()}
        pair = tuple(sorted(names.values()))
        t = out.setdefault(pair, {"wins": dict.fromkeys(pair, 0), "tie": 0, "both wrong": 0, "n": 0})
        t["n"] += 1
        if ab["result"] in ("A", "B"):
            t["wins"][names[ab["result"]]] += 1
        else:
            t[ab["result"]] += 1
    return out
