"""Choosing a model: the Pareto front and the choice (pareto), the roofline and phones
(projection), and notebook 02's table and figures (table).

May import: everything below it, up to research.measure.
"""
