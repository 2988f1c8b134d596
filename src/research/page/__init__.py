"""The chat page: the model host behind it (host), hostile text shown as text (text), serving on
this device behind its guard (server), and a page at rest that polls nothing (idle). The page's
layout is demo/app.py.

May import: everything below it, up to research.library.
"""
