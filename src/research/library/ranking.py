"""BM25 over passages, as the library's index and the ZIM search worker both use it: tokenizing
texts and a query (bm25s's own English tokenizer and stop words), ranking texts for a query, and a
passage's title (its document's, and its section's).
"""

from __future__ import annotations


def tokenize(texts: list[str], progress: bool = False):
    """bm25s's tokens (lower case, English stop words dropped) as ids and a vocabulary."""
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=progress)


def query_terms(query: str) -> list[str]:
    """`query_terms("What is the capital of Zorbia?")` -> ["what", "capital", "zorbia"]: bm25s's
    English stop words (the, is, of...) go, question words (what, how, does) stay."""
    import bm25s

    return bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]


def bm25_rank(texts: list[str], query: str, k: int) -> list[tuple[int, float]]:
    """(index, score) of the best `k` of a few `texts` for `query`, by BM25 (scores above 0)."""
    import bm25s

    if not texts:
        return []
    retriever = bm25s.BM25()
    retriever.index(tokenize(texts), show_progress=False)
    terms = [t for t in query_terms(query) if t in retriever.vocab_dict]
    if not terms:
        return []
    docs, scores = retriever.retrieve([terms], k=min(k, len(texts)), show_progress=False, n_threads=0)
    return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


def title_of(doc_title: str, section: str) -> str:
    """`title_of("Report", "Costs")` -> "Report › Costs"; the section alone is not repeated."""
    return f"{doc_title} › {section}" if section and section != doc_title else doc_title
