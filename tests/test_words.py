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
