"""The offline library: files under the chosen folders (files), documents reduced to passages
(sources, zim), the index and its search (store, build), passages in the prompt with citations
(grounded), gained and lost answers (evaluate) and retrieval at scale (bench).

May import: everything below it: the base modules, models, engine, ratings, confidence, qa.
"""
