"""Evaluation runs: a question set answered into run-keyed records with its summary (run), and two
runs compared (pairs).

May import: the base modules and research.qa, models, engine, ratings, confidence.
"""
