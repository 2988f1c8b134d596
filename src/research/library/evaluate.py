"""What a library gains and costs: each question answered closed-book and from the library, per mode.

Retrieval helps a small model with what it does not know, and can destroy what it knew
(arXiv 2603.11513): so each question is answered both ways and every mode is scored against
the closed-book answer on the same question. "Gained": right only with the mode; "lost": right
only closed-book; net = gained - lost. Generation is greedy, so the modes share answers: "never"
is the closed-book answer, "always" the grounded one, and "unsure" is the grounded one exactly
when the closed-book answer's confidence is below the threshold (its time counts both answers
then). Citation accuracy: of the right answers given with the library, the share whose cited
passage (the model's own [n], else the kit's attribution) holds a reference answer, scored as
research.evaluation.run scores answers ("contains").

Records (one per question and mode) go to the user's data folder through research.jsonl, each
saying what produced it: research.engine.provenance of the closed-book setting, the grounded prompt,
the library's name, version and content key, the mode, k and the confidence signal; a rerun of
the same setting skips what is done.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

from research import jsonl, paths
from research.confidence import calibration
from research.engine import Engine, Sampling, conversation, provenance
from research.errors import KitError
from research.evaluation import rescore
from research.evaluation import run as evaluate
from research.evaluation.run import mcnemar, score, wilson
from research.hashing import short_key
from research.library import grounded
from research.library import store as lib
from research.library.grounded import MODES, Grounding
from research.qa.questions import set_name

#: The evaluation's modes: the lookup modes, "unfamiliar" and "decoy". "unfamiliar" looks up when
#: the question alone, before any answer, is more likely to be answered wrong than right: the
#: calibrated probability of the "question" method (research.engine.signals.QUESTION, read while
#: the closed-book prompt is evaluated) less than the average question's of that calibration
#: (_familiarity), Mallen et al. 2023's adaptive retrieval with the model's own familiarity in
#: place of an entity's popularity; its time counts the prompt's evaluation, not the closed-book
#: answer. "decoy", a control the page never uses: passages the library
#: gives for another question of the set (none holding this question's answer), so that what
#: passages cost as prompt noise is measured apart from what wrong passages cost.
EVAL_MODES = (*MODES, "unfamiliar", "decoy")


def default_questions() -> list[str]:
    """The library's own question set (facts only its documents hold) and the kit's general
    questions (facts the model may know: where a library can only lose)."""
    data = paths.kit_data_dir()
    return [str(data / "library" / "questions.jsonl"), str(data / "qa" / "*.jsonl")]


def load(files: list[str], limit: int | None = None) -> list[dict]:
    """Questions of each file (the first `limit` of each), tagged with their set's name."""
    out = []
    for f in files:
        name = set_name(f)
        out += [{"set": name, **q} for q in evaluate.load_questions(f)[: limit or None]]
    return out


def library_key(library: lib.Library) -> str:
    """What the library holds: its files (path, size, time) and how they were cut, hashed."""
    m = library.manifest
    files = [(f["path"], f["size"], f["mtime_ns"], f.get("error") is None) for f in m["files"]]
    return short_key([m["format"], m["max_chars"], files])


def default_out(engine: Engine, library: str) -> Path:
    return paths.user_data_dir() / "evaluations" / "library" / f"{library}-{engine.model_id}.jsonl"


def run(
    engine: Engine,
    questions: list[dict],
    library: str,
    modes=MODES,
    *,
    out: str | Path | None = None,
    grounding: Grounding | None = None,
    system: str = evaluate.SYSTEM,
    sampling: Sampling = evaluate.SETTINGS,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Answer `questions` closed-book and from `library` and score each mode; (records, summary).

    `system` is the closed-book system prompt (the evaluation's: a few words only); grounded
    answers use research.library.grounded's prompt.
    """
    from tqdm import tqdm

    modes, grounding = tuple(modes), grounding or Grounding()
    for m in modes:
        if m not in EVAL_MODES:
            raise KitError(f"unknown mode {m!r}; choose from: {', '.join(EVAL_MODES)}")
    if grounding.confidence not in ("calibrated", *grounded.CONFIDENCE):
        raise KitError(f"unknown confidence signal {grounding.confidence!r}")
    library_obj = lib.open_library(library)
    out = Path(out) if out else default_out(engine, library)
    meta = provenance.of(engine, system, sampling)
    setting = {
        "library": library,
        "library_version": library_obj.version,
        "library_key": library_key(library_obj),
        "grounded_system": grounded.SYSTEM,
        "passage_order": grounded.PASSAGE_ORDER,  # in the key: a rerun with another layout is a new run
        "k": grounding.k,
        "confidence_fn": grounding.confidence,
        "threshold": grounding.threshold,
    }
    keys = {m: _key(meta["run"], setting, m) for m in modes}
    done = jsonl.done(out, "key", keys.values())
    resumed = list(done.values())
    for was, now in zip(resumed, rescore.rescore(resumed)[0], strict=True):
        if now is not was:  # scored by other code than this: scored again, and written
            jsonl.append(now, out)
            done[(now["key"], now["id"])] = now
    records = []
    for i, q in enumerate(
        tqdm(questions, desc=f"{library}: {engine.model_id}", unit="q", disable=not progress)
    ):
        if all((keys[m], q["id"]) in done for m in modes):
            records += [done[(keys[m], q["id"])] for m in modes]
            continue
        answers = _answer(engine, q, library, modes, grounding, system, sampling)
        if "decoy" in modes:
            answers["decoy"] = _decoy(engine, q, decoy_for(questions, i), library_obj, grounding, sampling)
        for m in modes:
            rec = {
                "key": keys[m],
                "mode": m,
                **_mode_record(m, answers, grounding.threshold),
                "id": q["id"],
                "question": q["question"],
                "references": q["references"],
                "set": q.get("set", "all"),
                "topic": q.get("topic"),
                "scorer": rescore.scorer_key(),
                **setting,
                **meta,
            }
            jsonl.append(rec, out)
            records.append(rec)
    return records, summarize(records)


def _key(run_key: str, setting: dict, mode: str) -> str:
    keyed = {k: v for k, v in setting.items() if k != "library_version"} | {"run": run_key, "mode": mode}
    return short_key(keyed)


def _answer(engine, q, library, modes, grounding, system, sampling) -> dict:
    """The closed-book answer (with its confidence) and the grounded one, as far as `modes` need."""
    refs = q["references"]
    a: dict = {}
    if {"never", "unsure", "unfamiliar"} & set(modes):
        t = time.perf_counter()
        engine.reset()  # what the last question left cached changes greedy answers (evaluate.run)
        text, stats = engine.answer(conversation(q["question"], system), sampling)
        a["closed"] = {
            "answer": text.strip(),
            "right": bool(score(text, refs)["contains"]),
            "time_s": time.perf_counter() - t,
            "prompt_s": stats.ttft_s,  # what deciding from the question alone costs
            "prompt_tokens": stats.prompt_tokens,
            "confidence": grounded.closed_book_confidence(
                engine, grounding, q["question"], text, stats, calibration.style_of(system)
            ),
            **_familiarity(engine, stats.signals),
        }
    closed = a.get("closed") or {}
    unsure = "unsure" in modes and closed["confidence"] < grounding.threshold
    if "always" in modes or unsure or ("unfamiliar" in modes and _unfamiliar(closed, grounding.threshold)):
        t = time.perf_counter()
        g = grounded.ground(engine, library, q["question"], "always", sampling=sampling, grounding=grounding)
        engine.reset()
        text, stats = engine.answer(g.messages, sampling)
        text = text.strip()
        numbers, by = grounded.citations(text, q["question"], g.sources)
        right = bool(score(text, refs)["contains"])
        holds = [s.n for s in g.sources if score(s.hit.text, refs)["contains"]]
        a["grounded"] = {
            "answer": text,
            "right": right,
            "time_s": time.perf_counter() - t,
            "retrieval_s": g.retrieval_s,
            "prompt_tokens": stats.prompt_tokens,
            "prompt_tokens_added": g.added_tokens,
            "cited": numbers,
            "cited_by": by,
            "citation_right": bool(set(numbers) & set(holds)),
            "retrieved_answer": bool(holds),  # a passage in the prompt held the answer
            "sources": [s.as_dict() for s in g.sources],
        }
    return a


def decoy_for(questions: list[dict], i: int) -> dict:
    """The question whose passages question `i` is given in "decoy" mode: the one half the set
    away (fixed, so a rerun gives the same), from the same question set when it has another.
    `decoy_for([a, b, c, d], 0)` -> c."""
    same = [q for q in questions if q.get("set") == questions[i].get("set")]
    pool = same if len(same) > 1 else questions
    at = pool.index(questions[i])
    return pool[(at + max(1, len(pool) // 2)) % len(pool)]


def _decoy(engine, q, decoy, library: lib.Library, grounding, sampling) -> dict:
    """Question `q` answered with the passages `decoy` retrieves, less any holding q's answer."""
    refs = q["references"]
    t = time.perf_counter()
    hits = library.search(decoy["question"], grounding.k * 2)
    hits = [h for h in hits if not score(h.text, refs)["contains"]][: grounding.k]
    sources = grounded.fit(engine, q["question"], hits, None, sampling.max_tokens, grounding.margin_tokens)
    engine.reset()
    messages = conversation(q["question"], grounded.system_for(sources))
    text, stats = engine.answer(messages, sampling)
    return {
        "answer": text.strip(),
        "right": bool(score(text, refs)["contains"]),
        "time_s": time.perf_counter() - t,
        "prompt_tokens": stats.prompt_tokens,
        "decoy_question": decoy["id"],
        "sources": [s_.as_dict() for s_ in sources],
    }


def _mode_record(mode: str, a: dict, threshold: float) -> dict:
    closed, ground = a.get("closed"), a.get("grounded")
    if mode == "decoy":
        d = a["decoy"]
        return {
            "answer": d["answer"],
            "right": d["right"],
            "closed_right": closed["right"] if closed else None,
            "looked_up": False,  # not a lookup: a control, kept out of the citation and lookup figures
            "confidence": closed["confidence"] if closed else None,
            "time_s": d["time_s"],
            "prompt_tokens": d["prompt_tokens"],
            "decoy_question": d["decoy_question"],
            "sources": d["sources"],
        }
    looked_up = (
        mode == "always"
        or (mode == "unsure" and closed["confidence"] < threshold)
        or (mode == "unfamiliar" and _unfamiliar(closed, threshold))
    )
    used = ground if looked_up else closed
    # What came before the lookup: the whole closed-book answer ("unsure"), or its prompt alone
    # ("unfamiliar" decides from the question's own signals).
    before = {"unsure": "time_s", "unfamiliar": "prompt_s"}.get(mode) if looked_up else None
    spent_before = (closed.get(before) or 0.0) if before else 0.0
    rec = {
        "answer": used["answer"],
        "right": used["right"],
        "closed_right": closed["right"] if closed else None,
        "looked_up": looked_up,
        "confidence": closed["confidence"] if closed else None,
        "time_s": used["time_s"] + spent_before,
        "prompt_tokens": used["prompt_tokens"],
    }
    if mode == "unfamiliar":
        rec["familiar"] = closed.get("familiar")
    if looked_up:
        rec |= {k: ground[k] for k in ground if k not in rec}
    return rec


def _familiarity(engine, signals) -> dict:
    """What "unfamiliar" decides by: the question-side probability of a right answer (the
    "question" method's calibration) and the mean of that probability over the answers the
    calibration was fitted on. The question alone seldom makes a small model likely right (the
    bundled model's stays under 50 %), so a question is unfamiliar when it is less likely to be
    answered right than the average question the calibration saw."""
    cal = calibration.load(engine.sha256, "question")
    if cal is None or not signals:
        return {"familiar": None, "familiar_below": None}
    return {"familiar": cal.probability(signals), "familiar_below": (cal.held_out or {}).get("mean_p")}


def _unfamiliar(closed: dict, threshold: float) -> bool:
    """Whether "unfamiliar" looks a question up: its question-side probability of a right answer
    below the average of its calibration's questions (`threshold` where that is not recorded),
    or unknown (no calibration of the "question" method for this model)."""
    p, below = closed.get("familiar"), closed.get("familiar_below")
    return p is None or p < (below if below is not None else threshold)


def summarize(records: list[dict]) -> dict:
    """Per mode, and per mode and question set: accuracy, gained, lost, net, citations, cost; the
    keys are the modes only. A mode compared with another (PAIRS) keeps that comparison in its
    "all" block, under "vs always" (paired())."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    closed: dict[str, bool] = {}
    for r in records:
        groups[(r["mode"], "all")].append(r)
        groups[(r["mode"], r.get("set", "all"))].append(r)
        if r["mode"] == "never":
            closed[r["id"]] = r["right"]
    out = {}
    for (mode, qset), recs in sorted(groups.items()):
        for r in recs:  # closed_right is in every record when "never" or "unsure" ran
            if r.get("closed_right") is None and r["id"] in closed:
                r["closed_right"] = closed[r["id"]]
        out.setdefault(mode, {})[qset] = _block(recs)
    for (a, b), c in paired(records).items():
        out[b]["all"][f"vs {a}"] = c
    return out


#: Modes compared question by question: does asking only when unsure lose less than always
#: asking, and do the library's passages lose more than another question's (prompt noise)?
PAIRS = (("always", "unsure"), ("always", "unfamiliar"), ("always", "decoy"))


def paired(records: list[dict]) -> dict:
    """Two modes on the same questions: right only with the first, only with the second, and the
    exact McNemar p-value of the difference. {("always", "unsure"): {"n", "only_first", ...}}."""
    right = {(r["mode"], r["id"]): bool(r["right"]) for r in records}
    out = {}
    for a, b in PAIRS:
        ids = [i for (m, i) in right if m == a and (b, i) in right]
        if ids:
            first = sum(right[(a, i)] and not right[(b, i)] for i in ids)
            second = sum(right[(b, i)] and not right[(a, i)] for i in ids)
            out[(a, b)] = {
                "n": len(ids),
                "only_first": first,
                "only_second": second,
                "p": mcnemar(first, second),
            }
    return out


def _block(recs: list[dict]) -> dict:
    n = len(recs)
    right = sum(r["right"] for r in recs)
    known = [r for r in recs if r.get("closed_right") is not None]
    gained = sum(r["right"] and not r["closed_right"] for r in known)
    lost = sum(r["closed_right"] and not r["right"] for r in known)
    looked = [r for r in recs if r["looked_up"]]
    right_looked = [r for r in looked if r["right"]]
    times = [r["time_s"] for r in recs]
    return {
        "n": n,
        "right": right / n if n else 0.0,
        "right_ci": wilson(right, n),
        "closed_right": sum(r["closed_right"] for r in known) / len(known) if known else None,
        "gained": gained,
        "lost": lost,
        "net": gained - lost,
        "p_paired": mcnemar(gained, lost) if known else None,  # gained against lost, same questions
        "lookups": len(looked) / n if n else 0.0,
        "citation_accuracy": (
            sum(r["citation_right"] for r in right_looked) / len(right_looked) if right_looked else None
        ),
        "model_cited": sum(r.get("cited_by") == "model" for r in looked) / len(looked) if looked else None,
        "retrieved_answer": sum(r["retrieved_answer"] for r in looked) / len(looked) if looked else None,
        "time_s": statistics.mean(times) if times else 0.0,
        "retrieval_ms": statistics.mean(r["retrieval_s"] * 1000 for r in looked) if looked else 0.0,
        "tokens_added": statistics.mean(r["prompt_tokens_added"] for r in looked) if looked else 0.0,
    }


def _p(x) -> str:
    return "    -" if x is None else f"{x:5.2f}"


def _pct(x) -> str:
    return "    -" if x is None else f"{x:5.0%}"


def format_summary(summary: dict) -> str:
    """The gained/lost table per mode (and per question set), then the issue's targets."""
    lines = [
        f"{'mode':7} {'set':8} {'n':>4} {'right':>6} {'closed':>6} {'gained':>6} {'lost':>5} {'net':>5} "
        f"{'p':>5} {'lookup':>6} {'cite ok':>7} {'by model':>8} {'in prompt':>9} {'s/answer':>8} "
        f"{'retr. ms':>8} {'+tokens':>7}"
    ]
    for mode in [m for m in EVAL_MODES if m in summary]:
        for qset, b in sorted(summary[mode].items(), key=lambda x: (x[0] != "all", x[0])):
            lines.append(
                f"{mode:7} {qset[:8]:8} {b['n']:4} {_pct(b['right']):>6} {_pct(b['closed_right']):>6} "
                f"{b['gained']:6} {b['lost']:5} {b['net']:+5} {_p(b['p_paired']):>5} {_pct(b['lookups']):>6} "
                f"{_pct(b['citation_accuracy']):>7} {_pct(b['model_cited']):>8} "
                f"{_pct(b['retrieved_answer']):>9} "
                f"{b['time_s']:8.2f} {b['retrieval_ms']:8.1f} {b['tokens_added']:7.0f}"
            )
    lines += [
        "right: answers containing a reference; closed: the same questions closed-book; gained/lost: right",
        "only with / only without the mode; cite ok: right library answers whose cited passage holds the",
        "answer (the model's own [n], else the kit's attribution); by model: library answers where the",
        "model wrote the number itself; in prompt: a passage in the prompt held the answer; p: exact",
        "McNemar test of gained against lost on the same questions (below 0.05: more than chance gives);",
        "decoy: a control, the passages of another question (none holding the answer): what passages",
        "cost as prompt noise alone.",
    ]
    for a, b in PAIRS:
        c = summary.get(b, {}).get("all", {}).get(f"vs {a}")
        if c:
            lines.append(
                f"paired, {a} vs {b} on the same {c['n']} questions: right only with {a} "
                f"{c['only_first']}, only with {b} {c['only_second']}, exact McNemar p = {c['p']:.2f}"
            )
    lines += targets(summary)
    return "\n".join(lines)


def targets(summary: dict) -> list[str]:
    """The issue's targets, as measured (printed, never asserted)."""
    out = []
    lib_set = (summary.get("always") or {}).get("library")
    if lib_set:
        out.append(
            f"target: library questions right with the library {lib_set['right']:.0%} (>= 70 %), "
            f"closed-book {_pct(lib_set['closed_right']).strip()}; right source cited for "
            f"{_pct(lib_set['citation_accuracy']).strip()} of those right (>= 80 %)"
        )
    a, u = (summary.get(m, {}).get("all") for m in ("always", "unsure"))
    if a and u:
        out.append(
            f"target: lost with 'unsure' {u['lost']} vs 'always' {a['lost']} (fewer), "
            f"at {u['time_s']:.2f} vs {a['time_s']:.2f} s an answer (lower)"
        )
    return out
