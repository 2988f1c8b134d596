"""The offline library: documents as passages (document), files reduced to them (sources: text
and PDF; markup: Markdown and HTML; zim: Kiwix ZIM), BM25 and passage titles (ranking), the index
and its search (store, build), passages in the prompt with citations (grounded), gained and lost
answers (evaluate) and retrieval at scale (bench).

May import: everything below it, up to research.evaluation.
"""
