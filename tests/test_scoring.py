"""Scores against the official scripts' own examples, the short answer in a sentence, hedging."""

import pytest

from research.qa import scoring
from research.qa.scoring import exact_match, extract_answer, f1, hedged, lm_eval_exact_match, score


def mean(values):
    return sum(values) / len(values)


# HF evaluate's exact_match metric (lm-evaluation-harness's exact_match_hf_evaluate is a port of it):
# the examples of its docstring, metrics/exact_match/exact_match.py, with the figures printed there.
REFS = ["the cat", "theater", "YELLING", "agent007"]
PREDS = ["cat?", "theater", "yelling", "agent"]


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, 0.25),
        ({"regexes_to_ignore": ["the ", "yell"], "ignore_case": True, "ignore_punctuation": True}, 0.5),
        (
            {"regexes_to_ignore": ["the ", "yell", "YELL"], "ignore_case": True, "ignore_punctuation": True},
            0.75,
        ),
        (
            {
                "regexes_to_ignore": ["the ", "yell", "YELL"],
                "ignore_case": True,
                "ignore_punctuation": True,
                "ignore_numbers": True,
            },
            1.0,
        ),
    ],
)
def test_hf_exact_match_docstring_examples(options, expected):
    plain = {"regexes_to_ignore": (), "ignore_case": False, "ignore_punctuation": False} | options
    got = mean([lm_eval_exact_match(p, [r], **plain) for p, r in zip(PREDS, REFS, strict=True)])
    assert round(got, 2) == expected


def test_hf_exact_match_sentence_example():
    refs = ["The cat sat on the mat.", "Theaters are great.", "It's like comparing oranges and apples."]
    preds = ["The cat sat on the mat?", "Theaters are great.", "It's like comparing apples and oranges."]
    plain = {"regexes_to_ignore": (), "ignore_case": False, "ignore_punctuation": False}
    assert (
        round(mean([lm_eval_exact_match(p, [r], **plain) for p, r in zip(preds, refs, strict=True)]), 2)
        == 0.33
    )


def test_squad_metric_docstring_example():
    # HF evaluate's squad metric (a wrapper of the official v1.1 script): {'exact_match': 100.0, 'f1': 100.0}
    assert exact_match("1976", ["1976"], scoring.squad_normalize) == 1.0 and f1("1976", ["1976"]) == 1.0


def test_squad_normalization_as_the_official_script():
    # lower, punctuation deleted (not spaced), articles dropped, whitespace collapsed
    assert scoring.squad_normalize("The  Nile!") == "nile"
    assert scoring.squad_normalize("Jean-Paul Sartre") == "jeanpaul sartre"
    assert scoring.squad_normalize("An apple a day, the end.") == "apple day end"
    assert scoring.squad_normalize("theater") == "theater"  # an article only as a whole word
    assert scoring.squad_f1("the Nile river", "Nile") == pytest.approx(2 / 3)
    assert scoring.squad_f1("Paris", "Lyon") == 0.0
    # the best over references
    assert f1("Heath Ledger", ["Ledger", "Heath Andrew Ledger"]) == pytest.approx(0.8)


# NQ-open dev rows (google-research-datasets/natural-questions, nq_open/NQ-open.dev.jsonl) with
# predictions, scored as the official ORQA eval_utils does: SQuAD's normalization after NFD.
NQ = [
    ("who plays joker in batman the dark knight", ["Ledger"], "Ledger.", 1.0),
    ("who plays joker in batman the dark knight", ["Ledger"], "Heath Ledger", 0.0),
    ("who sings sugar sugar you are my candy girl", ["the Archies"], "Archies", 1.0),
    (
        "what is the maximum data rate for the 802.11a standard select one",
        ["54\u00a0Mbit/s"],
        "54 Mbit/s",
        1.0,
    ),
    (
        "who is playing the halftime show at super bowl 2016",
        ["Beyoncé", "Coldplay", "Bruno Mars"],
        "beyoncé",
        1.0,
    ),
    # NFD keeps the accent as its own mark: without it the official script says no
    (
        "who is playing the halftime show at super bowl 2016",
        ["Beyoncé", "Coldplay", "Bruno Mars"],
        "Beyonce",
        0.0,
    ),
    ("how many seasons of vampire diaries r there", ["eight", "8"], "8", 1.0),
]


@pytest.mark.parametrize("question, answers, prediction, expected", NQ)
def test_nq_open_official_exact_match(question, answers, prediction, expected):
    assert exact_match(prediction, answers) == expected


def test_lm_eval_nq_open_metric_differs_where_its_config_does():
    # nq_open.yaml: regexes_to_ignore "\b(?:The |the |An |A |The |a |an )", ignore_case, ignore_punctuation
    assert lm_eval_exact_match("The Archies", ["the Archies"]) == 1.0
    assert lm_eval_exact_match("Ledger.", ["Ledger"]) == 1.0
    # no whitespace collapsing in lm-eval; the official script collapses it
    assert lm_eval_exact_match("Heath  Ledger", ["Heath Ledger"]) == 0.0
    assert exact_match("Heath  Ledger", ["Heath Ledger"]) == 1.0
    # lm-eval compares what is left, even nothing (HF evaluate has since refused empty matches)
    assert lm_eval_exact_match("!", ["?"]) == 1.0


@pytest.mark.parametrize(
    "answer, question, short",
    [
        ("The capital of Australia is Canberra.", "What is the capital of Australia?", "Canberra"),
        (
            "The first President of the United States was John F. Kennedy.",
            "Who was the first President of the United States?",
            "John F. Kennedy",
        ),
        (
            "The 2010 FIFA World Cup was won by Spain, who beat the Netherlands.",
            "Which country won the 2010 FIFA World Cup?",
            "Spain",
        ),
        (
            "The 2008 Summer Olympics were held in Beijing, China.",
            "Which city hosted the 2008 Summer Olympics?",
            "Beijing",
        ),
        (
            "The heart is the organ that pumps blood around the human body.",
            "Which organ pumps blood around the human body?",
            "The heart",
        ),
        ("Canberra.", "What is the capital of Australia?", "Canberra"),
        ("The answer is 1945. It ended in Europe first.", "In what year did World War II end?", "1945"),
        ("It is St. Louis, Missouri.", "Where is the Gateway Arch?", "St. Louis"),
        ("Mount Everest, also known as Chomolungma.", "What is the highest mountain?", "Mount Everest"),
    ],
)
def test_extract_answer(answer, question, short):
    assert extract_answer(answer, question) == short


def test_extraction_makes_chat_answers_comparable():
    refs, q = ["Canberra"], "What is the capital of Australia?"
    s = score("The capital of Australia is Canberra.", refs, q)
    assert s["em_official"] == 0.0 and s["em_official_short"] == 1.0 and s["short_answer"] == "Canberra"
    assert s["f1_official_short"] == 1.0 > s["f1_official"] > 0


def test_hedged_wrong_answers_are_counted_apart_from_hallucinations_and_refusals():
    refs, q = ["Paris"], "What is the capital of France?"
    assert hedged("I think it is Lyon.") and hedged("It is probably Lyon.") and not hedged("It is Lyon.")
    assert not hedged("It is about 300 km long.")  # a number's "about" is not doubt
    stated, doubted, refused = (
        score("It is Lyon.", refs, q),
        score("Maybe Lyon?", refs, q),
        score("I don't know.", refs, q),
    )
    assert stated["hallucinated"] and not stated["hedged"]
    assert doubted["hedged"] and not doubted["hallucinated"] and not doubted["refused"]
    assert refused["refused"] and not refused["hedged"] and not refused["hallucinated"]
    right = score("I think it is Paris.", refs, q)
    assert (
        right["contains"] and not right["hedged"] and not right["hallucinated"]
    )  # hedged means hedged *and* wrong


# --- Every field of score(), worked by hand -------------------------------------------------------


def test_every_score_of_a_sentence_answer():
    """The kit's normalization: "capital of australia is canberra" (5 words; "the" dropped) against
    "canberra": no exact match, contained, F1 = 2*1/(5+1); SQuAD's is the same here; the short
    answer "Canberra" matches exactly; lm-eval compares the whole sentence: no."""
    got = score("The capital of Australia is Canberra.", ["Canberra"], "What is the capital of Australia?")
    assert got == {
        "exact_match": 0.0,
        "contains": 1.0,
        "f1": pytest.approx(1 / 3),
        "refused": False,
        "empty": False,
        "hedged": False,
        "hallucinated": False,
        "short_answer": "Canberra",
        "em_official": 0.0,
        "f1_official": pytest.approx(1 / 3),
        "em_official_short": 1.0,
        "f1_official_short": 1.0,
        "em_lm_eval": 0.0,
    }


def test_every_score_of_an_exact_answer():
    got = score("  paris. ", ["Lyon", "PARIS"])
    assert got == {
        "exact_match": 1.0,
        "contains": 1.0,
        "f1": 1.0,
        "refused": False,
        "empty": False,
        "hedged": False,
        "hallucinated": False,
        "short_answer": "paris",
        "em_official": 1.0,
        "f1_official": 1.0,
        "em_official_short": 1.0,
        "f1_official_short": 1.0,
        "em_lm_eval": 1.0,  # the answer stripped first, then "paris." -> "paris"
    }


def test_a_refusal_that_names_the_answer_is_not_a_refusal():
    """ "I'm not sure, but it is Paris." contains the reference: right, neither refused nor hedged.
    Its 8 words ("i m not sure but it is paris") against 1: F1 = 2/9; SQuAD's drops the
    apostrophe ("im not sure but it is paris", 7 words): 2/8."""
    got = score("I'm not sure, but it is Paris.", ["Paris"], "What is the capital of France?")
    assert (got["contains"], got["refused"], got["hedged"], got["hallucinated"]) == (1.0, False, False, False)
    assert got["f1"] == pytest.approx(2 / 9) and got["f1_official"] == pytest.approx(2 / 8)
    refusal = score("I'm not sure.", ["Paris"])
    assert (refusal["refused"], refusal["hedged"], refusal["hallucinated"], refusal["contains"]) == (
        True,
        False,
        False,
        0.0,
    )


def test_no_answer_and_no_references():
    empty = score("", ["Paris"])
    assert (empty["empty"], empty["hallucinated"], empty["hedged"], empty["refused"]) == (
        True,
        False,
        False,
        False,
    )
    assert empty["exact_match"] == empty["f1"] == empty["em_official"] == 0.0
    nothing = score("Paris", [])  # no reference: every score 0, never an error
    assert nothing["exact_match"] == nothing["f1"] == nothing["em_official"] == nothing["f1_official"] == 0.0
    assert nothing["hallucinated"] and not nothing["empty"]
    blank = score("Paris", ["", "  ", "Paris"])  # references that normalize to nothing are left out
    assert blank["exact_match"] == 1.0 and blank["f1"] == 1.0
    assert score("Lyon", ["Paris", "Lyon"])["exact_match"] == 1.0
    assert score("Lyon", ["Paris"])["exact_match"] == 0.0
    assert scoring.best(scoring.squad_f1, "Paris", []) == 0.0
    assert f1("Paris", []) == 0.0 and exact_match("Paris", []) == 0.0


def test_the_kits_normalization():
    assert scoring.normalize("  The Nile.") == "nile"
    assert scoring.normalize("the nile") == "nile"
    assert scoring.normalize("AN apple a day") == "apple day"
    assert scoring.normalize("Jean-Paul") == "jean paul"  # punctuation is a space
    assert scoring.normalize("Beyoncé") == "beyonce"  # accents folded
    assert scoring.normalize("ﬁve Ｐａｒｉｓ") == "five paris"  # compatibility forms (NFKD)
    assert scoring.normalize("−5 °C") == "5 °c"  # U+2212 minus is a hyphen, so punctuation
    assert score("Beyonce", ["Beyoncé"])["exact_match"] == 1.0


def test_nq_normalization_is_nfd_not_nfc():
    """After NFD, "Ån" is "a" + a combining ring + "n": the official script's article rule then
    drops the "a" (a combining mark is not a word character), leaving the ring and "n". NFC would
    keep "ån" whole."""
    assert scoring.nq_normalize("Ån") == "\u030an"
    assert exact_match("Ån", ["\u030an"]) == 1.0
    assert scoring.nq_normalize("Beyoncé") == "beyonce\u0301"


def test_lm_eval_exact_match_lowers_and_can_ignore_digits():
    assert lm_eval_exact_match("PARIS", ["paris"]) == 1.0
    assert lm_eval_exact_match("Strasse", ["Straße"]) == 0.0  # lower case, not upper: "ß" stays "ß"
    assert lm_eval_exact_match("cat1", ["dog1"], ignore_numbers=True) == 0.0
    assert lm_eval_exact_match("cat1", ["cat2"], ignore_numbers=True) == 1.0
    assert lm_eval_exact_match("cat1", ["cat2"]) == 0.0


@pytest.mark.parametrize(
    "answer, question, short",
    [
        ("Paris is xxxx.", "", "xxxx"),  # no question: nothing restates it, the right side answers
        ("Malcolm X.", "", "Malcolm X"),  # only the sentence's end is cut, not letters
        ('"Xerxes".', "", "Xerxes"),  # quotes, and only quotes
        ("'Canberra'", "", "Canberra"),
        ("In Paris.", "", "Paris"),
        ("It is in Paris.", "", "Paris"),
        (
            "Canberra is the capital of Australia, while Sydney is the largest city.",
            "What is the capital of Australia?",
            "Canberra",
        ),
        (
            "The adult human body has 206 bones, but only 23 are visible.",
            "How many bones are in the adult human body?",
            "The adult human body has 206 bones",
        ),
        ("The capital of France is known as Paris, which is big.", "What is the capital of France?", "Paris"),
    ],
)
def test_extract_answer_edges(answer, question, short):
    assert extract_answer(answer, question) == short


def test_official_scores_use_the_question():
    got = scoring.official_scores("Paris is xxxx.", ["xxxx"])
    assert got["short_answer"] == "xxxx" and got["em_official_short"] == 1.0
    got = scoring.official_scores("Paris is xxxx.", ["Paris"], "Where is xxxx?")
    assert got["short_answer"] == "Paris" and got["em_official_short"] == 1.0
    assert score("Paris is xxxx.", ["Paris"], "Where is xxxx?")["short_answer"] == "Paris"


def test_without_a_question_nothing_restates_it():
    assert extract_answer("Paris is xxxx.") == "xxxx"
    assert score("Paris is xxxx.", ["xxxx"])["short_answer"] == "xxxx"
    # With one: the side of "is" holding the question's words is the frame, after dropping the
    # frame's own words ("known as") from the other side.
    assert extract_answer("Paris is known as 'Lutetia'.", "What is xxxx?") == "Lutetia"


def test_lm_eval_drops_every_article_of_its_pattern():
    for article in ("The ", "the ", "An ", "A ", "a ", "an "):
        assert lm_eval_exact_match(article + "apple", ["apple"]) == 1.0, article


@pytest.mark.parametrize(
    "answer",
    ["It is likely Lyon.", "Possibly Lyon.", "Perhaps Lyon.", "It could be Lyon.", "As far as I know, Lyon."],
)
def test_more_ways_of_doubt(answer):
    assert hedged(answer)
