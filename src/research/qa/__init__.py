"""Questions and their scores, pure functions of text: question sets from files or the hub
(questions), the official normalizations and scores (scoring), and the words of answers and
questions several parts of the kit compare (words: stop words, content words, token F1).

May import: the base modules only.
"""
