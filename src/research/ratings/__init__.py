"""People's verdicts on answers: the crash-safe ratings file (store), rating in the terminal
(rater) and agreement between people (agreement).

May import: the base modules only.
"""
