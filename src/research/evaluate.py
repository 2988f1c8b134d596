"""Automatic evaluation of question answering: load a question set, run a model, score the answers.

Runs are reproducible (temperature 0, fixed seed, the model's own prompt format, a system prompt
asking for a short answer) and resumable: one JSON Lines record per question, appended durably,
each carrying the key of the run that produced it (research.provenance), so a rerun of the same
run skips what is done and a file holding several runs is summarized per run, never mixed.
A refusal ("I don't know") and an empty answer are counted apart; "hallucinated" is every other
answer that contains no reference (see score()).
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from research import jsonl, paths, provenance
from research.engine import Engine, Sampling, conversation
from research.errors import KitError

SYSTEM = "Answer the question with a few words only: a name, a place, a number or a date. No explanation."
SETTINGS = Sampling(temperature=0, max_tokens=48, seed=0, repeat_penalty=1.0)
REFUSAL = re.compile(
    r"\b(i (do not|don't|dont) know|i'?m not sure|i am not sure|i cannot (answer|say)|i can'?t (answer|say)|"
    r"no information|not able to answer|unable to answer|i have no (idea|knowledge))\b",
    re.I,
)
LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def default_questions() -> str:
    return str(paths.kit_data_dir() / "qa" / "*.jsonl")


@dataclass(frozen=True)
class Columns:
    """Column names of a question set; the kit's own and NQ-open's shape work as they are."""

    question: str = "question"
    answer: str = "answer"  # one string or a list of accepted strings
    aliases: str | None = "aliases"  # more accepted strings, when the set has them
    id: str | None = "id"  # else a hash of the question
    topic: str | None = "topic"  # else everything is "all"


def load_questions(path: str | None = None, columns: Columns = Columns()) -> list[dict]:
    """Questions as dicts (id, question, references, topic, difficulty) from JSONL/CSV/Parquet."""
    from datasets import load_dataset

    path = path or default_questions()
    if path.startswith("hf:"):
        return _rows_from(_from_hub(path[3:]), path, columns)
    suffix = Path(path).suffix.lower()
    if suffix not in LOADERS:
        raise KitError(f"{path}: a question file is .jsonl, .json, .csv or .parquet")
    if "*" not in path and not Path(path).is_file():
        raise KitError(f"no such file: {path}")
    if "*" not in path and Path(path).stat().st_size == 0:
        raise KitError(f"{path} is empty: no questions to ask")
    try:
        ds = load_dataset(LOADERS[suffix], data_files=path, split="train")
    except Exception as e:  # datasets raises many kinds for a malformed file
        raise KitError(
            f"cannot read {path} as {LOADERS[suffix]}: {type(e).__name__}: {str(e)[:200]}"
        ) from None
    return _rows_from(ds, path, columns)


def _from_hub(name: str):
    """A question set from the Hugging Face hub, only when asked: `hf:nq_open` or `hf:nq_open:validation`."""
    import os

    import datasets
    import huggingface_hub
    from datasets import load_dataset

    repo, _, split = name.partition(":")
    saved = {k: os.environ.pop(k, None) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    datasets.logging.set_verbosity_error()  # retries are logged line by line: one message is ours
    huggingface_hub.utils.logging.set_verbosity_error()
    try:
        return load_dataset(repo, split=split or "validation")
    except Exception as e:  # no network, unknown repo, gated set
        why = " ".join(str(e).split())[:160]
        raise KitError(
            f"could not fetch {repo!r} from the Hugging Face hub ({type(e).__name__}: {why}); "
            "download it on a connected machine and pass the file instead"
        ) from None
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _rows_from(ds, path: str, columns: Columns) -> list[dict]:
    """Rows of a loaded dataset as the kit's question dicts, interleaved by topic."""
    missing = [c for c in (columns.question, columns.answer) if c not in ds.column_names]
    if missing:
        raise KitError(
            f"{path} has no column {missing[0]!r}; its columns are {', '.join(ds.column_names)} "
            "(name yours with --question-col / --answer-col)"
        )
    if len(ds) == 0:
        raise KitError(f"{path} holds no questions")
    rows = []
    for row in ds:
        refs = _strings(row[columns.answer])
        if columns.aliases and columns.aliases in ds.column_names:
            refs += [a for a in _strings(row[columns.aliases]) if a not in refs]
        question = str(row[columns.question] or "").strip()
        if not question or not refs:
            continue
        has_id = columns.id and columns.id in ds.column_names and row[columns.id]
        qid = str(row[columns.id]) if has_id else hashlib.sha1(question.encode()).hexdigest()[:12]
        topic = str(row[columns.topic]) if columns.topic and columns.topic in ds.column_names else "all"
        rows.append(
            {
                "id": qid,
                "question": question,
                "references": refs,
                "topic": topic,
                "difficulty": row.get("difficulty"),
            }
        )
    if not rows:
        raise KitError(f"{path}: no row has both a question and an answer")
    return interleave(rows)


def interleave(rows: list[dict]) -> list[dict]:
    """Round-robin over topics, so that the first N questions (--limit) span all of them."""
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_topic[r["topic"]].append(r)
    queues = list(by_topic.values())
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()] if str(value).strip() else []


def normalize(text: str) -> str:
    """SQuAD-style normalization: `"  The Nile."` -> `"nile"`; accents folded, `-` as a space."""
    text = unicodedata.normalize("NFKD", text.lower().replace("\u2212", "-"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = "".join(" " if c in string.punctuation else c for c in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(pred: list[str], ref: list[str]) -> float:
    common = defaultdict(int)
    for t in ref:
        common[t] += 1
    overlap = 0
    for t in pred:
        if common[t] > 0:
            overlap += 1
            common[t] -= 1
    if not pred or not ref or overlap == 0:
        return 0.0
    p, r = overlap / len(pred), overlap / len(ref)
    return 2 * p * r / (p + r)


def score(answer: str, references: list[str]) -> dict:
    """Exact match, alias containment (whole tokens), token F1, refusal; best over references.

    `hallucinated` is what is left: an answer that is not empty, contains no reference and does
    not refuse. That is mostly wrong answers stated as answers, but it also counts right answers
    the automatic check cannot see (a paraphrase, "JFK" for "John F. Kennedy") and answers cut
    off before the name came; the rate is an upper bound on confident wrong answers.
    """
    pred = normalize(answer)
    refs = [normalize(r) for r in references if normalize(r)]
    ptoks = pred.split()
    padded = f" {pred} "
    contains = any(f" {r} " in padded for r in refs)  # whole tokens: "c" never matches inside "cat"
    refused = bool(REFUSAL.search(answer)) and not contains
    empty = not pred
    return {
        "exact_match": float(any(pred == r for r in refs)),
        "contains": float(contains),
        "f1": max((_f1(ptoks, r.split()) for r in refs), default=0.0),
        "refused": refused,
        "empty": empty,
        "hallucinated": not contains and not refused and not empty,
    }


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
) -> list[dict]:
    """Answer the questions this run has not answered yet in `out`, appending one record each.

    A run is what produced the answers (model file hash, prompt format, system prompt, sampling,
    context, llama.cpp build: research.provenance); every record carries its key, and only
    records of the same key count as done, so another model or setting evaluated into the same
    file answers everything anew. Records of errors (a question longer than the context, say)
    are asked again, since their cause may have changed. Returns this run's records for the
    asked questions, one per question. `label` is a display name kept in the records (the
    notebook's blind A/B names its runs with it).
    """
    from tqdm import tqdm

    out = _out_file(out)
    done, _bad = jsonl.read(out)
    meta = provenance.of(engine, system, sampling)
    key = meta["run"]
    mine = {r["id"]: r for r in records_by_run(done).get(key, []) if r.get("error") is None}
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
        record = {
            "id": q["id"],
            "question": q["question"],
            "references": q["references"],
            "topic": q["topic"],
            "difficulty": q.get("difficulty"),
            **meta,
        }
        t = time.perf_counter()
        try:
            text, stats = engine.answer(conversation(q["question"], system), sampling)
            text = text.strip()
            record |= {
                "answer": text,
                "scores": score(text, q["references"]),
                "error": None,
                "timings": {
                    "ttft_s": stats.ttft_s,
                    "decode_tps": stats.decode_tps,
                    "completion_tokens": stats.completion_tokens,
                    "stop_reason": stats.stop_reason,
                    "total_s": stats.total_s,
                },
            }
        except KitError as e:  # a question longer than the context, say: recorded, not fatal
            record |= {
                "answer": None,
                "scores": None,
                "error": str(e),
                "timings": {"total_s": time.perf_counter() - t},
            }
        now = provenance.of(engine, system, sampling)
        if now["run"] != key:  # the template went past a bound: answered in a fallback format
            record |= now
            key = now["run"]
            meta = {"label": label or engine.model_id, **now}
        jsonl.append(record, out)
        mine[q["id"]] = record
    return [mine[q["id"]] for q in asked if q["id"] in mine]


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
        for key in ("exact_match", "contains", "refused", "empty", "hallucinated"):
            k = sum(float(s.get(key, False)) for s in scores)
            out[key] = k / n if n else 0.0
            out[key + "_ci"] = wilson(k, n)
        f1 = [s["f1"] for s in scores]
        mean = sum(f1) / n if n else 0.0
        sd = math.sqrt(sum((x - mean) ** 2 for x in f1) / (n - 1)) if n > 1 else 0.0
        out["f1"] = mean
        out["f1_ci"] = (
            (max(0.0, mean - 1.96 * sd / math.sqrt(n)), min(1.0, mean + 1.96 * sd / math.sqrt(n)))
            if n
            else (0.0, 0.0)
        )
        return out

    overall = block(groups.pop("overall", []))
    return {**overall, "errors": errors, "per_topic": {t: block(s) for t, s in sorted(groups.items())}}


def format_summary(summary: dict) -> str:
    """A per-topic table of the summary."""
    lines = [
        f"{'topic':12} {'n':>4} {'exact':>6} {'contains':>9} {'F1':>6} {'refused':>8} {'empty':>6} "
        f"{'halluc.':>8}"
    ]
    rows = [*summary["per_topic"].items(), ("overall", summary)]
    for name, s in rows:
        lines.append(
            f"{name:12} {s['n']:4} {s['exact_match']:6.1%} {s['contains']:9.1%} {s['f1']:6.2f} "
            f"{s['refused']:8.1%} {s.get('empty', 0):6.1%} {s['hallucinated']:8.1%}"
        )
    lo, hi = summary["contains_ci"]
    lines.append(
        f"\ncontains (answer includes a reference): {summary['contains']:.1%}, 95 % CI {lo:.1%}-{hi:.1%}; "
        f"{summary['errors']} questions could not be asked"
    )
    lines.append(
        "halluc.: not empty, no reference, no refusal: mostly wrong answers, but also right answers in other "
        "words (a paraphrase, an abbreviation) and cut-off ones"
    )
    return "\n".join(lines)


def format_runs(runs: list[dict], current: str | None = None) -> str:
    """One line per run of a records file (research.evaluate.summarize_file)."""
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
