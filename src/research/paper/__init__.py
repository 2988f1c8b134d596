"""The paper: each claim against the kit's figures (claims), Orca-Mini-3B-shaped files measured
(shaped), the notebooks' figures (figures) and the notebooks rendered to docs/results (render).

May import: everything below it, up to research.selection.
"""
