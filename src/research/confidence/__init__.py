"""Which answers to trust: the registry of confidence methods, their signals and words (methods),
calibration from signal to probability (calibration), and sorting and abstention on held-out answers
(selective).

May import: the base modules, research.models, research.engine and research.ratings.
"""
