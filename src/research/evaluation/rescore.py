"""Records scored again when the scoring code changed: a record keeps its answer, so its scores
never need the model again.

Every evaluation record carries `scorer`, a fingerprint of the code that scored it (the source of
research.qa.scoring and research.qa.words). A resumed run would otherwise keep the scores its
records were written with, and a fix to a normalization or to the refusal phrases would never
reach the figures rendered from them: research.evaluation.run and research.library.evaluate
rescore what they resume, and `research rescore FILE` rewrites a records file in place.

The free signals read from an answer's words alone (research.qa.words.type_match) are computed
again with the scores, so records written before one existed read it too.

Library records (research.library.evaluate: one per question and mode) are rescored for "right"
and "closed_right"; their citation verdicts need the passages' text, which records do not keep,
and stay as written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from research import jsonl, paths
from research.engine.signals import text_signals
from research.errors import KitError
from research.qa import scoring, words

#: What identifies one library setting across its modes (research.library.evaluate's records).
_LIBRARY_SETTING = (
    "run",
    "library_key",
    "k",
    "threshold",
    "confidence_fn",
    "grounded_system",
    "passage_order",
)


@functools.lru_cache(maxsize=1)
def scorer_key() -> str:
    """The fingerprint of the scoring code: 12 hex digits of the SHA-256 of its two modules' source.

    Any edit to them changes it (a reformatting too: rescoring costs milliseconds, a stale score a
    wrong figure)."""
    h = hashlib.sha256()
    for module in (scoring, words):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


def _right(answer, references) -> bool:
    return answer is not None and bool(scoring.score(answer, references)["contains"])


def rescore(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records, the rescored ones): each record whose `scorer` is not this code's, or whose
    signals lack those of its answer's words, scored again from the answer it kept, as a new dict
    (the old one is not changed); errors stay errors.

    `rescore([{"answer": "Paris.", "references": ["Paris"], "question": "?", "scores": {}}])[1]`
    -> one record, its "scores" those of research.qa.scoring.score and its "scorer" this code's.
    """
    key = scorer_key()
    out, changed = [], []
    for r in records:
        if (
            (r.get("scorer") == key and not _lacks_text_signals(r))
            or r.get("answer") is None
            or r.get("references") is None
        ):
            out.append(r)
            continue
        if "mode" in r:  # a library record: right and wrong only
            r = r | {"right": _right(r["answer"], r["references"]), "scorer": key}
        else:
            r = r | {
                "scores": scoring.score(r["answer"], r["references"], r.get("question") or ""),
                "scorer": key,
            }
            r = _text_signals(r)
        out.append(r)
        changed.append(r)
    _closed_right(out)
    return out, changed


def _kept_signals(r: dict) -> dict | None:
    """The free signals an evaluation record kept (none for a library record, whose confidence is
    a number, nor for one kept with none: a backend with them off)."""
    conf = r.get("confidence")
    signals = conf.get("signals") if isinstance(conf, dict) and "mode" not in r else None
    return signals if isinstance(signals, dict) and signals else None


def _lacks_text_signals(r: dict) -> bool:
    """Whether a record keeps free signals but not those of its answer's words (written by a kit
    that did not read them yet, whatever its scorer)."""
    signals = _kept_signals(r)
    return signals is not None and "type_match" not in signals


def _text_signals(r: dict) -> dict:
    """The record with its free signals that its answer's words alone give (research.engine.signals.
    text_signals) computed again, as the engine computes them: a record written before such a
    signal existed reads it too, and a method that needs it is not left without (the engine's and
    this one agreed on all 1,570 records of 2026-12-07)."""
    signals = _kept_signals(r)
    if signals is None or not isinstance(r.get("question"), str):
        return r  # no signals kept: none made up
    signals = signals | text_signals(str(r["answer"]), r["question"])
    return r | {"confidence": r["confidence"] | {"signals": signals}}


def _closed_right(records: list[dict]) -> None:
    """A library record's closed_right from the closed-book ("never") record of its question and
    setting, when the file holds it (an "unsure" record that did not look up is that answer)."""

    def setting(r: dict) -> tuple:
        return (r.get("id"), *(json.dumps(r.get(f)) for f in _LIBRARY_SETTING))

    closed = {setting(r): r["right"] for r in records if r.get("mode") == "never"}
    for i, r in enumerate(records):
        if r.get("mode") not in (None, "never"):
            found = closed.get(setting(r))
            if found is not None and r.get("closed_right") != found:
                records[i] = r | {"closed_right": found}
        elif r.get("mode") == "never" and r.get("closed_right") not in (None, r["right"]):
            records[i] = r | {"closed_right": r["right"]}


def verdicts(record: dict) -> tuple:
    """What a reader counts from a record: right (contains), exact match, hallucinated, refused."""
    if "mode" in record:
        return (record.get("right"), record.get("closed_right"))
    s = record.get("scores") or {}
    return tuple(s.get(k) for k in ("contains", "em", "hallucinated", "refused"))


def rescore_file(path: str | os.PathLike) -> dict:
    """Score again the records of `path` that other scoring code scored, and rewrite the file in
    one rename (a crash leaves the old file whole). Returns {"records", "rescored", "changed":
    records whose right/wrong verdict moved, "damaged": lines skipped (they are dropped)}.

    Refuses (KitError) when the file grew while it was read: an evaluation is writing to it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KitError(f"no records file at {path}")
    size = path.stat().st_size
    records, damaged = jsonl.read(path)
    new, rescored = rescore(records)
    moved = sum(verdicts(a) != verdicts(b) for a, b in zip(records, new, strict=True))
    if any(a is not b for a, b in zip(records, new, strict=True)):
        if path.stat().st_size != size:
            raise KitError(
                f"{path} grew while it was read (an evaluation is writing to it); run again after it"
            )
        paths.write_private(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
    return {"records": len(records), "rescored": len(rescored), "changed": moved, "damaged": damaged}
