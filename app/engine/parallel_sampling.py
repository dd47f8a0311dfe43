"""n > 1: one request fanned out into n independent samples, merged back into one output.

Each sample is an ordinary engine request (id "<parent>#<i>", n=1, seed + i when a seed is set),
so the scheduler, prefix cache (the shared prompt is computed once and shared) and stop logic
need nothing new. The parent's RequestOutput is sample 0's, with `outputs` listing all samples.
"""
from __future__ import annotations

from dataclasses import replace

from .outputs import RequestOutput
from .sampling_params import SamplingParams


def child_params(params: SamplingParams, i: int) -> SamplingParams:
    return replace(params, n=1, seed=None if params.seed is None else params.seed + i)


def child_id(parent: str, i: int) -> str:
    return f"{parent}#{i}"


class SampleGroups:
    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, int]] = {}  # child id -> (parent id, sample index)
        self._outs: dict[str, list[RequestOutput | None]] = {}  # parent id -> samples so far

    def __contains__(self, parent: str) -> bool:
        return parent in self._outs

    def add(self, parent: str, n: int) -> list[str]:
        ids = [child_id(parent, i) for i in range(n)]
        self._outs[parent] = [None] * n
        for i, c in enumerate(ids):
            self._parent[c] = (parent, i)
        return ids

    def children(self, parent: str) -> list[str]:
        return [child_id(parent, i) for i in range(len(self._outs.get(parent, [])))]

    def drop(self, parent: str) -> None:
        for c in self.children(parent):
            self._parent.pop(c, None)
        self._outs.pop(parent, None)

    def merge(self, outs: list[RequestOutput]) -> list[RequestOutput]:
        """Pass plain outputs through; hold samples until their group is complete."""
        result = []
        for o in outs:
            key = self._parent.pop(o.request_id, None)
            if key is None:
                result.append(o)
                continue
            parent, i = key
            samples = self._outs[parent]
            samples[i] = o
            if all(s is not None for s in samples):
                del self._outs[parent]
                result.append(replace(samples[0], request_id=parent, outputs=list(samples)))
        return result
