"""Questions, scores and evaluation runs: question sets from files or the hub (questions), the
official normalizations and scores (scoring), answering a set into run-keyed records with its summary
(evaluate), and two runs compared (pairs).

May import: the base modules and research.models, research.engine, research.ratings,
research.confidence.
"""
