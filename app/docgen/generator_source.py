"""GeneratorSource: the doc generator, loaded only once a chunk really has to be generated.

A rerun whose results are all in the store must not pay for a model load (seconds to minutes).
The pipeline asks this object for the generator on its first cache miss; until then only the
factory's declared `model_id` (part of every result key) is used. A factory that declares no
model id (a plain callable) is loaded up front, since no key can be computed without it.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable

from app.llm.types import DocGenerator


class GeneratorSource:
    def __init__(self, factory: Callable[[], DocGenerator], on_load: Callable[[], None] | None = None) -> None:
        self._factory = factory
        self._on_load = on_load  # e.g. a progress message before a long load
        self.declared_model_id: str | None = getattr(factory, "model_id", None)
        self._gen: DocGenerator | None = None
        self._lock = threading.Lock()
        self._loading: asyncio.Future | None = None  # one load shared by every coroutine that waits for it
        self.loads = 0

    @classmethod
    def ready(cls, generator: DocGenerator) -> "GeneratorSource":
        """A source around a generator that is already loaded (library callers, tests)."""
        src = cls(lambda: generator)
        src.declared_model_id = str(generator.model_id)
        src._gen = generator
        return src

    @property
    def loaded(self) -> bool:
        return self._gen is not None

    @property
    def model_id(self) -> str:
        if self.declared_model_id is not None:
            return str(self.declared_model_id)
        return str(self.load_now().model_id)

    def load_now(self) -> DocGenerator:
        """Load (once) and return the generator; blocks while the model loads."""
        with self._lock:
            if self._gen is None:
                if self._on_load is not None:
                    self._on_load()
                gen = self._factory()
                self.loads += 1
                if self.declared_model_id is not None and str(gen.model_id) != str(self.declared_model_id):
                    gen.close()
                    raise ValueError(f"the generator factory declared model id {self.declared_model_id!r} but the "
                                     f"generator it built reports {gen.model_id!r}; stored results are keyed by "
                                     "model id, so the two must agree")
                self._gen = gen
            return self._gen

    async def get(self) -> DocGenerator:
        """The generator, loading it off the event loop on first use (other coroutines keep running)."""
        if self._gen is not None:
            return self._gen
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self.load_now))
        return await asyncio.shield(self._loading)

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
