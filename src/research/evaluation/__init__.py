"""Evaluation runs: a question set answered into run-keyed records with its summary (run), and two
runs compared (pairs).

May import: everything below it: the base modules, qa, models, llamacpp, engine, ratings,
confidence.
"""
