"""Automatic evaluation of question answering: load a question set, run a model, score the answers.

Runs are reproducible (temperature 0, fixed seed, the model's own prompt format, a system prompt
asking for a short answer) and resumable: one JSON Lines record per question, appended durably,
each carrying the key of the run that produced it (research.engine.provenance), so a rerun of the same
run skips what is done and a file holding several runs is summarized per run, never mixed.
A refusal ("I don't know"), an empty answer and a wrong answer said with doubt are counted
apart; "hallucinated" is every other answer that contains no reference (research.qa.scoring.score).
Every record also carries its confidence signals (research.confidence.methods), and a run's summary
says how well each confidence method tells its right answers from its wrong ones, on held-out
answers (research.confidence.selective).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from pathlib import Path

from research import confidence, jsonl, paths
from research.confidence import calibration, selective, tables
from research.engine import Engine, Sampling, conversation, provenance
from research.errors import KitError
from research.evaluation import rescore
from research.qa.questions import Columns, default_questions, interleave, load_questions  # noqa: F401
from research.qa.scoring import REFUSAL, normalize, score  # noqa: F401  (the kit's scores, imported from here before)

SYSTEM = "Answer the question with a few words only: a name, a place, a number or a date. No explanation."
SETTINGS = Sampling(temperature=0, max_tokens=48, seed=0, repeat_penalty=1.0)
#: The answers sampled for the agreement signals (research.confidence.sampled.sampled_signals): the
#: page's sampling, without its repeat penalty, and long enough for the first sentence (the
#: bundled model names a reference within 24 tokens in 129 of its 136 right answers).
SAMPLES_SETTINGS = Sampling(
    temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, max_tokens=32
)
SAMPLES = confidence.SAMPLES
#: Confidence signals that cost more than the answer itself, and the signals each one adds.
EXTRA = {"samples": confidence.SAMPLED + confidence.AMONG_SAMPLES, "p_true": ("p_true",)}


def records_by_run(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by run key, the latest record of each question kept (a retried error
    replaces the record before it). Records written before run keys existed group by model
    under "legacy:MODEL" and are never resumed."""
    runs: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        key = r.get("run") or f"legacy:{r.get('model')}"
        runs[key][r.get("id")] = r  # later lines win
    return {key: list(by_id.values()) for key, by_id in runs.items()}


def run(
    engine: Engine,
    questions: list[dict],
    out: str | Path,
    *,
    limit: int | None = None,
    system: str = SYSTEM,
    sampling: Sampling = SETTINGS,
    progress: bool = True,
    label: str | None = None,
    extra: tuple[str, ...] = (),
    samples: int = SAMPLES,
    method: str = confidence.DEFAULT,
) -> list[dict]:
    """Answer the questions this run has not answered yet in `out`, appending one record each.

    A run is what produced the answers (model file hash, prompt format, system prompt, sampling,
    context, llama.cpp build: research.engine.provenance); every record carries its key, and only
    records of the same key count as done, so another model or setting evaluated into the same
    file answers everything anew. Records of errors (a question longer than the context, say)
    are asked again, since their cause may have changed. Returns this run's records for the
    asked questions, one per question. `label` is a display name kept in the records (the
    notebook's blind A/B names its runs with it).

    Every record carries its confidence signals (research.confidence.methods): the free ones always,
    and those of `extra` when asked ("samples": `samples` more answers for agreement and
    semantic entropy; "p_true": one more prompt), with the calibrated probability of `method`
    when a calibration of this model is saved, and the sampled answers themselves. A record
    without a signal asked for now, or with another number of samples, is answered again (the
    answer is the same: the run is the same); a sampled signal added since is computed from the
    samples the record kept, when they were made as asked now.
    """
    from tqdm import tqdm

    unknown = set(extra) - set(EXTRA)
    if unknown:
        raise KitError(
            f"unknown confidence signals {', '.join(sorted(unknown))}; choose from {', '.join(EXTRA)}"
        )
    out = _out_file(out)
    meta = provenance.of(engine, system, sampling)
    key = meta["run"]
    needs = [k for e in extra for k in EXTRA[e]]
    resumed = jsonl.done(out, "run", {key}, usable=lambda r: r.get("error") is None)
    answered = {qid: r for (_, qid), r in resumed.items()}
    mine = {
        i: r
        for i, r in answered.items()
        if "confidence" in r
        and all(k in r["confidence"]["signals"] for k in needs)
        and (
            "samples" not in extra or r["confidence"]["settings"].get("samples") == _samples_settings(samples)
        )
    }
    # Scored by other code than this: scored again from the answer kept, and written, so that a
    # fix to the scoring reaches every figure made from this file (research.evaluation.rescore).
    for r in rescore.rescore(list(mine.values()))[1]:
        jsonl.append(r, out)
        mine[r["id"]] = r
    asked = questions[: limit or len(questions)]
    todo = [q for q in asked if q["id"] not in mine]
    meta = {"label": label or engine.model_id, **meta}
    for q in tqdm(
        todo,
        desc=f"{label or engine.model_id}",
        unit="q",
        disable=not progress,
        initial=len(asked) - len(todo),
        total=len(asked),
    ):
        record = _answered(engine, q, meta, answered.get(q["id"]), system, sampling, extra, samples, method)
        now = provenance.of(engine, system, sampling)
        if now["run"] != key:  # the template went past a bound: answered in a fallback format
            record |= now
            key = now["run"]
            meta = {"label": label or engine.model_id, **now}
        jsonl.append(record, out)
        mine[q["id"]] = record
    # A record answered before its question came in a named set learns the set's name here.
    return [mine[q["id"]] | ({"set": q["set"]} if q.get("set") else {}) for q in asked if q["id"] in mine]


def _answered(engine, q: dict, meta: dict, before, system, sampling, extra, samples, method) -> dict:
    """One question's record: answered now, or the earlier answer with only the signals asked for
    now added (`before`); an error a user can cause (a question longer than the context) recorded."""
    record = {
        "id": q["id"],
        "question": q["question"],
        "references": q["references"],
        "topic": q["topic"],
        "difficulty": q.get("difficulty"),
        **({"set": q["set"]} if q.get("set") else {}),
        **meta,
    }
    t = time.perf_counter()
    try:
        messages = conversation(q["question"], system)
        earlier = None
        if before is not None and "confidence" in before:  # answered: only the signals asked for now
            text, signals, costs = (
                before["answer"],
                before["confidence"]["signals"],
                before["confidence"]["costs"],
            )
            timings = before["timings"]
            earlier = before["confidence"]
        else:
            # What the previous question left in the KV cache changes which llama.cpp kernels
            # evaluate this prompt, and so its greedy answer: forget it, so that a record is
            # reproducible from its question alone.
            engine.reset()
            text, stats = engine.answer(messages, sampling)
            text, signals = text.strip(), stats.signals or {}
            costs = {
                "signal_s": stats.signal_s,
                "decode_s": stats.total_s - stats.ttft_s,
                "answer_s": stats.total_s,
            }
            timings = {
                "ttft_s": stats.ttft_s,
                "decode_tps": stats.decode_tps,
                "completion_tokens": stats.completion_tokens,
                "stop_reason": stats.stop_reason,
                "total_s": stats.total_s,
            }
        record |= {
            "answer": text,
            "scores": score(text, q["references"], q["question"]),
            "scorer": rescore.scorer_key(),
            "confidence": _confidence(
                engine, messages, text, signals, costs, extra, samples, method, earlier
            ),
            "error": None,
            "timings": timings,
        }
    except KitError as e:  # a question longer than the context, say: recorded, not fatal
        record |= {
            "answer": None,
            "scores": None,
            "error": str(e),
            "timings": {"total_s": time.perf_counter() - t},
        }
    return record


def _confidence(
    engine: Engine,
    messages,
    text: str,
    signals,
    costs,
    extra,
    samples: int,
    method: str,
    earlier: dict | None = None,
) -> dict:
    """A record's confidence: its signals, what they cost, the sampled answers they came from,
    and the calibrated probability (of the calibration for answers to its system prompt).

    `earlier`: the confidence of this run's earlier record of the question. What it holds and is
    not asked for now is kept (its sampled answers and how they were made, when only P(True) is
    added); when its sampled answers were made as asked now, the sampled signals are computed
    from them again (a signal added since) instead of sampling anew."""
    earlier = earlier or {}
    signals, costs = dict(signals), dict(costs)
    settings = dict(earlier.get("settings") or {})
    out = {"samples": earlier["samples"]} if earlier.get("samples") is not None else {}
    question = str(messages[-1]["content"])
    if "samples" in extra:
        kept = out.get("samples") if settings.get("samples") == _samples_settings(samples) else None
        if kept is not None:
            got = confidence.agreement_signals(text, kept, question) | {"samples": kept}
        else:
            got = confidence.sampled_signals(engine, messages, text, samples, SAMPLES_SETTINGS, question)
            costs["samples_s"] = got.pop("samples_s")
        out["samples"] = got.pop("samples")
        signals |= got
        settings["samples"] = _samples_settings(samples)
    if "p_true" in extra:
        got = confidence.p_true(engine, question, text)
        costs["p_true_s"] = got.pop("p_true_s")
        signals |= got
        settings["p_true"] = {"prompt": confidence.P_TRUE_PROMPT}
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    conf = confidence.of_signals(signals, engine.sha256, method, calibration.style_of(system))
    return {"signals": signals, **conf.as_dict(), "costs": costs, "settings": settings} | out


def _samples_settings(k: int) -> dict:
    """How a record's sampled answers were made: how many, with which sampling."""
    return {"k": k, "sampling": dataclasses.asdict(SAMPLES_SETTINGS)}


def _out_file(out: str | Path) -> Path:
    """The records file; KitError when it is a folder or its folder cannot be made."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise KitError(f"{out} is a folder; name a .jsonl file for the records (e.g. {out / 'run.jsonl'})")
    return out


def default_out(engine: Engine) -> Path:
    """Where `eval` keeps records when no --out is given: the user's data folder, one file a model."""
    return paths.user_data_dir() / "evaluations" / f"{engine.model_id}.jsonl"


def summarize_file(path: str | Path) -> list[dict]:
    """Every run in a records file, each summarized on its own: [{"run", "provenance", "summary"}]."""
    records, _bad = jsonl.read(_out_file(path))
    records = rescore.rescore(records)[0]  # as this code scores them (research rescore writes it)
    out = []
    for key, recs in records_by_run(records).items():
        first = recs[0]
        prov = {k: first.get(k) for k in ("label", *provenance.KEYED, "model")}
        out.append({"run": key, "provenance": prov, "summary": summarize(recs)})
    return out


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion: `wilson(5, 10)` -> (0.237, 0.763)."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of paired answers: `b` right only one way, `c` only the other
    (twice the binomial tail of min(b, c) in b + c at one half, at most 1). `mcnemar(7, 3)` -> 0.344;
    `mcnemar(0, 0)` -> 1.0."""
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


#: Scores that are shares of answers (Wilson intervals) and means over answers (normal intervals).
RATES = (
    "exact_match",
    "contains",
    "refused",
    "empty",
    "hedged",
    "hallucinated",
    "em_official",
    "em_official_short",
    "em_lm_eval",
)
MEANS = ("f1", "f1_official", "f1_official_short")


def summarize(records: list[dict]) -> dict:
    """Overall and per-topic scores with 95 % intervals; errors counted apart."""
    groups: dict[str, list[dict]] = defaultdict(list)
    errors = 0
    for r in records:
        if r.get("scores") is None:
            errors += 1
            continue
        groups["overall"].append(r["scores"])
        groups[r.get("topic") or "all"].append(r["scores"])

    def block(scores: list[dict]) -> dict:
        n = len(scores)
        out = {"n": n}
        for key in RATES:
            k = sum(float(s.get(key, False)) for s in scores)
            out[key] = k / n if n else 0.0
            out[key + "_ci"] = wilson(k, n)
        for key in MEANS:
            values = [s.get(key, 0.0) for s in scores]
            mean = sum(values) / n if n else 0.0
            sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else 0.0
            half = 1.96 * sd / math.sqrt(n) if n else 0.0
            out[key] = mean
            out[key + "_ci"] = (max(0.0, mean - half), min(1.0, mean + half)) if n else (0.0, 0.0)
        return out

    overall = block(groups.pop("overall", []))
    return {**overall, "errors": errors, "per_topic": {t: block(s) for t, s in sorted(groups.items())}}


def format_summary(summary: dict) -> str:
    """A per-topic table of the summary."""
    lines = [
        f"{'topic':12} {'n':>4} {'exact':>6} {'contains':>9} {'F1':>6} {'refused':>8} {'empty':>6} "
        f"{'hedged':>7} {'halluc.':>8}"
    ]
    rows = [*summary["per_topic"].items(), ("overall", summary)]
    for name, s in rows:
        lines.append(
            f"{name:12} {s['n']:4} {s['exact_match']:6.1%} {s['contains']:9.1%} {s['f1']:6.2f} "
            f"{s['refused']:8.1%} {s.get('empty', 0):6.1%} {s.get('hedged', 0):7.1%} {s['hallucinated']:8.1%}"
        )
    lo, hi = summary["contains_ci"]
    lines.append(
        f"\ncontains (answer includes a reference): {summary['contains']:.1%}, 95 % CI {lo:.1%}-{hi:.1%}; "
        f"{summary['errors']} questions could not be asked"
    )
    lines.append(
        "halluc.: not empty, no reference, no refusal, no hedging (hedged: wrong, said with doubt): mostly "
        "wrong answers stated as facts, but also right answers in other words and cut-off ones"
    )
    if "em_official" in summary:
        lines.append(
            "official scores, for published figures: exact match {em_official:.1%} and F1 {f1_official:.3f} "
            "(SQuAD/NQ-open normalization), on the extracted short answer {em_official_short:.1%} and "
            "{f1_official_short:.3f}; lm-evaluation-harness nq_open exact match {em_lm_eval:.1%}".format(
                **summary
            )
        )
    if summary.get("confidence") is not None:
        lines.append(
            "\n"
            + tables.format_report(
                summary["confidence"],
                summary.get("costs"),
                summary.get("confidence_selected"),
                summary.get("confidence_baselines"),
                summary.get("confidence_by_set"),
            )
        )
    a = summary.get("abstention")
    if a:
        lines.append(
            f"answer only when sure ({a['method']} below {a['below']:.0%} counted as refusals, {a['how']}): "
            f"{a['answered']:.1%} answered, {a['accuracy_answered']:.1%} of them right (all answers: "
            f"{a['accuracy_all']:.1%}); hallucinated {a['hallucinated_before']:.1%} -> "
            f"{a['hallucinated_after']:.1%} of all questions"
        )
    return "\n".join(lines)


def confidence_report(
    records: list[dict], model_sha256: str | None, abstain_below: float | None = None, method: str = ""
) -> dict:
    """The confidence part of a run's summary: each method on held-out answers
    (research.confidence.selective.report) beside trivial baselines (selective.baselines), what
    the signals cost per answer, and with `abstain_below`
    what "answer only when sure" gives with `method` (default: the kit's chosen method where it
    was fixed and calibrated on other questions, else the page's, confidence.DEFAULT); with
    records from several question sets, the page's method on each set apart
    ("confidence_by_set")."""
    rep = selective.report(records, model_sha256)
    spent = [r["confidence"]["costs"] for r in records if r.get("confidence")]
    costs = {}
    for key in ("signal_s", "decode_s", "answer_s", "samples_s", "p_true_s"):
        values = [c[key] for c in spent if c.get(key) is not None]
        if values:
            costs[key] = sum(values) / len(values)
    out = {"confidence": rep, "costs": costs, "confidence_selected": selective.selected(records)}
    out["confidence_baselines"] = selective.baselines(records)
    sets = sorted({r.get("set") for r in records if r.get("set")})
    if len(sets) > 1:  # the page's method on each question set apart: where it transfers, where not
        out["confidence_by_set"] = {
            s: got[confidence.DEFAULT]
            for s in sets
            if (
                got := selective.report(
                    [r for r in records if r.get("set") == s], model_sha256, only=[confidence.DEFAULT]
                )
            )
        }
    if abstain_below is not None and rep:
        # Fixed before these answers: the kit's chosen method where its calibration was fitted on
        # other questions, else the page's; never the best of the table on these same answers.
        method = method or selective.chosen_beforehand(rep) or confidence.DEFAULT
        out["abstention"] = selective.abstention(records, method, abstain_below, model_sha256)
    return out


def format_runs(runs: list[dict], current: str | None = None) -> str:
    """One line per run of a records file (research.evaluation.run.summarize_file)."""
    lines = []
    for r in runs:
        s, mark = r["summary"], " (this run)" if r["run"] == current else ""
        lines.append(
            f"  run {r['run']}{mark}: {provenance.describe(r['provenance'])} · {s['n']} answers, "
            f"contains {s['contains']:.1%}, {s['errors']} errors"
        )
    return "\n".join(lines)


def examples_markdown(records: list[dict], n: int = 3) -> str:
    """A Markdown table of right, hallucinated and refused answers, like the paper's figure."""
    rows = ["| | question | references | answer |", "|---|---|---|---|"]
    kinds = (("right", "contains"), ("hallucinated", "hallucinated"), ("refused", "refused"))
    for kind, key in kinds:
        for r in [r for r in records if r.get("scores") and r["scores"][key]][:n]:
            cells = (r["question"], ", ".join(r["references"][:3]), r["answer"][:160])
            rows.append(
                f"| {kind} | " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"
            )
    return "\n".join(rows)
