"""The question set keeps its promises (fields, topics, dates, ids), read as the JSON Lines it is."""

import datetime
import json
from pathlib import Path

from research.qa.scoring import normalize, score
from research.qa.words import asks_for

QA = Path(__file__).resolve().parents[1] / "data" / "qa"
FIELDS = {"id", "question", "answer", "aliases", "topic", "difficulty", "time_sensitive", "as_of", "source"}


class Rows(list):
    """The rows of JSON Lines files, with a column as a list (`rows["id"]`) and their field names."""

    def __getitem__(self, key):
        return [r.get(key) for r in self] if isinstance(key, str) else super().__getitem__(key)

    @property
    def column_names(self) -> list[str]:
        return list(dict.fromkeys(k for r in self for k in r))


def load(pattern: str) -> Rows:
    files = sorted(Path("/").glob(pattern.lstrip("/")))
    return Rows(json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip())


PREFIX = {
    "politics": "pol",
    "geography": "geo",
    "history": "his",
    "science": "sci",
    "technology": "tec",
    "health": "hea",
    "culture": "cul",
    "sports": "spo",
    "economy": "eco",
}


def test_question_set_is_whole_and_consistent():
    qa = load(str(QA / "*.jsonl"))
    assert len(qa) >= 300 and set(qa.column_names) == FIELDS
    assert len(set(qa["id"])) == len(qa) and len(set(qa["question"])) == len(qa)
    topics = set(qa["topic"])
    assert len(topics) >= 8 and topics <= set(PREFIX)
    assert set(qa["difficulty"]) == {"easy", "medium", "hard"}
    for row in qa:
        assert row["id"].startswith(PREFIX[row["topic"]] + "-"), row["id"]
        assert row["question"].strip().endswith("?") or row["question"].strip()[-1] in ".)", row["id"]
        assert row["answer"].strip() and row["answer"] not in row["aliases"], row["id"]
        assert row["source"].strip(), row["id"]
        if row["time_sensitive"]:
            as_of = row["as_of"]
            day = as_of.date() if isinstance(as_of, datetime.datetime) else datetime.date.fromisoformat(as_of)
            assert day <= datetime.date(2026, 11, 21), row["id"]
        else:
            assert row["as_of"] is None, row["id"]


def test_the_fresh_held_out_set_is_whole_and_asks_nothing_the_kits_set_asks():
    fresh = load(str(QA.parent / "heldout" / "*.jsonl"))
    qa = load(str(QA / "*.jsonl"))
    assert len(fresh) == 200 and set(fresh.column_names) == FIELDS
    assert len(set(fresh["id"])) == len(fresh) and len(set(fresh["question"])) == len(fresh)
    assert not set(fresh["id"]) & set(qa["id"])
    asked = {q.lower().strip() for q in qa["question"]}
    for row in fresh:
        assert row["id"].startswith("h-") and row["topic"] in PREFIX, row["id"]
        assert row["question"].lower().strip() not in asked, row["id"]
        assert row["answer"].strip() and row["answer"] not in row["aliases"], row["id"]
        # a reference inside its own question would be "right" whatever the model answered
        words = f" {row['question'].lower()} "
        assert all(f" {ref.lower()} " not in words for ref in [row["answer"], *row["aliases"]]), row["id"]
        assert not row["time_sensitive"] and row["as_of"] is None and row["source"].strip(), row["id"]


def test_the_query_style_set_is_whole_and_asks_nothing_the_other_sets_ask():
    """data/queries: NQ-open's style (lower case, no question mark), hard or medium, no id or
    question of the older sets, and no reference inside its own question."""
    queries = load(str(QA.parent / "queries" / "*.jsonl"))
    older = Rows(
        [
            *load(str(QA / "*.jsonl")),
            *load(str(QA.parent / "heldout" / "*.jsonl")),
            *load(str(QA.parent / "longtail" / "*.jsonl")),
            *load(str(QA.parent / "library" / "questions.jsonl")),
        ]
    )
    assert len(queries) == 150 and queries.column_names == list(load(str(QA / "*.jsonl"))[0])
    assert len(set(queries["id"])) == len(queries)
    assert len({q.lower().strip() for q in queries["question"]}) == len(queries)
    assert not set(queries["id"]) & set(older["id"])
    asked = {q.lower().strip().rstrip("?") for q in older["question"]}
    kinds = {"ent": "culture", "rel": "culture", "cul": "culture", **{p: t for t, p in PREFIX.items()}}
    for row in queries:
        assert list(row) == queries.column_names, row["id"]
        prefix = row["id"].split("-")[1]
        assert row["id"].startswith("q-") and kinds[prefix] == row["topic"], row["id"]
        question = row["question"]
        assert question == question.lower().strip() and not question.endswith("?"), row["id"]
        assert question not in asked, row["id"]
        assert row["difficulty"] in {"medium", "hard"}, row["id"]
        assert_answer_apart(row)


#: The sets written before data/blind (their questions are the "older" ones a held-out set must not ask),
#: folders of JSON Lines files or single files under data/.
OLDER_SETS = ("qa", "heldout", "longtail", "queries", "library/questions.jsonl", "fewshot/questions.jsonl")


def load_sets(*names: str) -> Rows:
    """The rows of several sets under data/: each a folder of JSON Lines files or one file."""
    patterns = [name if name.endswith(".jsonl") else f"{name}/*.jsonl" for name in names]
    return Rows(row for pattern in patterns for row in load(str(QA.parent / pattern)))


def load_new_set(folder: str, older: Rows) -> Rows:
    """A held-out set in two files of 75 under data/: the fields of data/qa in their order, all nine
    topics, unique ids and questions (also after the kit's normalization), no id of the older sets."""
    rows = load(str(QA.parent / folder / "*.jsonl"))
    files = sorted((QA.parent / folder).glob("*.jsonl"))
    assert [len(load(str(f))) for f in files] == [75, 75]
    assert rows.column_names == list(load(str(QA / "*.jsonl"))[0])
    assert len(set(rows["id"])) == len(rows) and set(rows["topic"]) == set(PREFIX)
    assert len({normalize(q) for q in rows["question"]}) == len(rows)
    assert not set(rows["id"]) & set(older["id"])
    return rows


def asked_in(older: Rows) -> tuple[set[str], set[str]]:
    """The older sets' questions as written (lower case, no question mark) and normalized."""
    questions = older["question"]
    return {q.lower().strip().rstrip("?") for q in questions}, {normalize(q) for q in questions}


def assert_fair_question(row: dict, columns: list[str], asked: tuple[set[str], set[str]]) -> None:
    """One question of a held-out set: its fields in order, asked in no older set (as written or after
    the kit's normalization), and its answer apart (assert_answer_apart)."""
    assert list(row) == columns, row["id"]
    question = row["question"]
    assert question.lower().strip().rstrip("?") not in asked[0], row["id"]
    assert normalize(question) not in asked[1], row["id"]
    assert_answer_apart(row)


def assert_answer_apart(row: dict) -> None:
    """A held-out question's answer: apart from its aliases, none of them inside the question (on
    lower-case words and on the kit's score), nothing time-sensitive, a Wikipedia source."""
    question = row["question"]
    assert row["answer"].strip() and row["answer"] not in row["aliases"], row["id"]
    references = [row["answer"], *row["aliases"]]
    words = f" {question.lower()} "
    assert all(f" {ref.lower()} " not in words for ref in references), row["id"]
    # and on the kit's own normalization: the question scored as its own answer is wrong
    assert not score(question, references, question)["contains"], row["id"]
    assert not row["time_sensitive"] and row["as_of"] is None, row["id"]
    assert row["source"].startswith("Wikipedia: "), row["id"]


def test_the_blind_set_is_whole_and_asks_nothing_the_other_sets_ask():
    """data/blind: two files of 75, all nine topics, hard or medium, half in NQ-open's style (lower
    case, no question mark) and half in full sentences with a question mark, no id or question of
    the older sets (also after the kit's normalization), and no reference inside its own question."""
    older = load_sets(*OLDER_SETS)
    blind = load_new_set("blind", older)
    asked = asked_in(older)
    lower = 0
    for row in blind:
        assert_fair_question(row, blind.column_names, asked)
        assert row["id"].startswith(f"b-{PREFIX[row['topic']]}-"), row["id"]
        question = row["question"]
        searched = question == question.lower().strip() and not question.endswith("?")
        assert searched or (question[0].isupper() and question.endswith("?")), row["id"]
        lower += searched
        assert row["difficulty"] in {"medium", "hard"}, row["id"]
    assert 0.4 <= lower / len(blind) <= 0.6


def test_the_nq_hard_set_is_whole_and_asks_nothing_the_other_sets_ask():
    """data/nqhard: two files of 75, all nine topics, all hard, all in NQ-open's style (lower case, no
    question mark), at least 25 asking for a number or a year, no id or question of the older sets
    or of data/blind (also after the kit's normalization), and no reference inside its own question."""
    older = load_sets(*OLDER_SETS, "blind")
    nqhard = load_new_set("nqhard", older)
    asked = asked_in(older)
    kinds = {"ent": "culture", **{p: t for t, p in PREFIX.items()}}
    for row in nqhard:
        assert_fair_question(row, nqhard.column_names, asked)
        prefix = row["id"].split("-")[1]
        assert row["id"].startswith("n-") and kinds.get(prefix) == row["topic"], row["id"]
        question = row["question"]
        assert question == question.lower().strip() and not question.endswith("?"), row["id"]
        assert row["difficulty"] == "hard", row["id"]
    assert sum(asks_for(q) == "number" for q in nqhard["question"]) >= 25
