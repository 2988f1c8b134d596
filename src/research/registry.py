"""One registry for the things the kit has in kinds: chat formats (research.engine.prompts),
confidence methods (research.confidence.methods) and the scores that decide a library lookup
(research.library.grounded). As llama-cpp-python's register_chat_format and lm-evaluation-harness's
registries: a name, a thing, and one line of error for a name nobody registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from research.errors import KitError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """A dict of things by name that says which kind it holds.

    `FORMATS = Registry("chat format")`; `@FORMATS.register("chatml")` above a function;
    `FORMATS.get_or_fail("chatm")` -> KitError "unknown chat format 'chatm'; choose from: chatml".
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers what it decorates under `name` (a later one replaces it)."""

        def wrap(thing: T) -> T:
            self[name] = thing
            return thing

        return wrap

    def get_or_fail(self, name: str) -> T:
        if name not in self:
            raise KitError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self)}")
        return self[name]
