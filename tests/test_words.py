"""The words several scores compare (research.qa.words), each against hand-written expectations."""

import pytest

from research.qa import words


@pytest.mark.parametrize(
    "text, first",
    [
        ("Paris. It is big.", "Paris."),
        ("John F. Kennedy was shot. In 1963.", "John F. Kennedy was shot."),
        ("It is in St. Louis. Yes.", "It is in St. Louis."),
        ("Pi is 3.14 or so. Yes.", "Pi is 3.14 or so."),
        ("Who? Me!", "Who?"),
        ("It ends with Mr.", "It ends with Mr."),  # an abbreviation at the very end still ends it
        ("Paris", "Paris"),
        ("\n\n  Paris. Lyon.\nSecond line.", "Paris."),
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_first_sentence(text, first):
    assert words.first_sentence(text) == first


@pytest.mark.parametrize(
    "text, word",
    [("Canberra,", "canberra"), ("Jean-Paul", "jeanpaul"), ("CAFÉ", "café"), ("a_b", "ab"), ("", "")],
)
def test_norm_word(text, word):
    assert words.norm_word(text) == word


def test_terms_and_asked():
    assert words.terms("The 3 eggs.") == ["3", "eggs"]
    assert words.terms("It IS the Nile, of course") == ["nile", "course"]
    assert words.terms("") == []
    assert words.asked("What is the capital of Australia?") == {
        "what",
        "is",
        "the",
        "capital",
        "of",
        "australia",
    }


def test_content_words():
    q = "What is the capital of Australia?"
    assert words.content_words("The capital of Australia is Canberra.", q) == ["canberra"]
    assert words.content_words("Canberra is big. Sydney is bigger.", q) == ["canberra", "big"]
    assert words.content_words("Canberra.", "") == ["canberra"]


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (["a", "b"], ["b", "c"], 0.5),
        (["a", "a", "b"], ["a", "b", "b"], 2 * 2 / 6),  # counts: min(2,1) + min(1,2)
        (["x"], ["y"], 0.0),
        ([], ["y"], 0.0),
        (["nile"], ["nile"], 1.0),
    ],
)
def test_token_f1(a, b, expected):
    assert words.token_f1(a, b) == pytest.approx(expected)


def test_token_f1_of_two_empty_lists_is_zero():
    assert words.token_f1([], []) == 0.0


@pytest.mark.parametrize(
    "question, kind",
    [
        ("When did the Berlin Wall fall?", "number"),
        ("In what year did the Titanic sink?", "number"),
        ("how many hearts does an octopus have", "number"),
        ("How old was Mozart when he died?", "number"),
        ("Which decade saw the first moon landing?", "number"),
        ("Who painted the Mona Lisa?", "name"),
        ("whose face is on the us ten dollar bill", "name"),
        ("Where were the 1956 Summer Olympics held?", "name"),
        ("From where does the Nile flow?", "name"),
        ("What is the capital of Australia?", "any"),
        ("Which planet is largest?", "any"),
        ("How does a bicycle stay upright?", "any"),  # "how" alone asks for no number
        ("Whoever said that?", "any"),  # a word that begins like "who" is not "who"
        ("", "any"),
    ],
)
def test_asks_for(question, kind):
    assert words.asks_for(question) == kind


@pytest.mark.parametrize(
    "answer, question, match",
    [
        ("Canberra.", "What is the capital of Australia?", True),
        ("The capital of Australia is the capital.", "What is the capital of Australia?", False),
        ("It was in 1989.", "When did the Berlin Wall fall?", True),
        ("The Berlin Wall fell in November.", "When did the Berlin Wall fall?", True),
        ("An octopus has three hearts.", "how many hearts does an octopus have", True),
        ("The Berlin Wall fell after protests.", "When did the Berlin Wall fall?", False),
        # the question's own number is no answer to it
        ("The 1956 Summer Olympics were held.", "Where were the 1956 Summer Olympics held?", False),
        ("They were held in Melbourne.", "Where were the 1956 Summer Olympics held?", True),
        ("Leonardo da Vinci painted it.", "Who painted the Mona Lisa?", True),
        ("It was painted by a famous painter.", "Who painted the Mona Lisa?", False),
        # restating the question, even with capitals, names nobody
        ("President during the Cuban Crisis.", "who was president during the cuban crisis", False),
        ("The first woman to be the first woman", "Who was the first woman in space?", False),
        # only the first sentence counts: a name said after it answers nothing asked
        ("It was painted long ago. Leonardo.", "Who painted the Mona Lisa?", False),
        ("", "Who painted the Mona Lisa?", False),
    ],
)
def test_type_match(answer, question, match):
    assert words.type_match(answer, question) is match
