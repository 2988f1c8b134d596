"""The chat page: the model host behind it (host), the page's messages (messages), hostile text
shown as text (text), a library's sources and passages (sources), exporting a conversation (export),
serving on this device (server) behind its guard (guard) with its security headers (headers), a
page at rest that polls nothing (idle), and a page started in a child process (launch). The page's
layout is demo/app.py.

May import: everything below it, up to research.library.
"""
