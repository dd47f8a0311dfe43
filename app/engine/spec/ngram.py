"""Prompt lookup: propose the tokens that followed the latest earlier occurrence of the sequence's
last n tokens (n from ngram_max down to ngram_min), searched over prompt + output so far.

Pure Python and incremental: each sequence keeps a dict from n-gram to the start of its latest
occurrence that has a continuation, extended by the tokens appended since the last call, so a
lookup costs O(ngram_max - ngram_min + 1) hashes however long the sequence is.
"""
from __future__ import annotations


class _Index:
    __slots__ = ("grams", "upto")

    def __init__(self) -> None:
        self.grams: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest occurrence
        self.upto = 0  # n-grams ending before this position are indexed


class NgramProposer:
    def __init__(self, ngram_max: int, ngram_min: int):
        self.n_max, self.n_min = ngram_max, ngram_min
        self._index: dict[int, _Index] = {}

    def retain(self, seq_ids: set[int]) -> None:
        """Forget sequences no longer running (finished or preempted)."""
        for sid in [s for s in self._index if s not in seq_ids]:
            del self._index[sid]

    def propose(self, seqs: list, ks: dict[int, int]) -> dict[int, tuple[list[int], None]]:
        """{seq_id: (proposals, None)}; None: the draft distribution is a point mass."""
        return {s.seq_id: (self.lookup(s.seq_id, s.token_ids, ks[s.seq_id]), None) for s in seqs}

    def lookup(self, seq_id: int, tokens: list[int], k: int) -> list[int]:
        """Up to k proposed continuations of `tokens` (the confirmed tokens, prompt + output)."""
        idx = self._index.get(seq_id)
        if idx is None:
            idx = self._index[seq_id] = _Index()
        L = len(tokens)
        # Index every n-gram that ends at a position j <= L - 2 (it has a continuation, tokens[j+1]).
        grams = idx.grams
        for j in range(idx.upto, L - 1):
            for n in range(self.n_min, self.n_max + 1):
                if j + 1 >= n:
                    grams[tuple(tokens[j + 1 - n : j + 1])] = j + 1 - n
        idx.upto = max(idx.upto, L - 1)
        for n in range(self.n_max, self.n_min - 1, -1):
            if L < n + 1:
                continue
            start = grams.get(tuple(tokens[L - n :]))
            if start is not None:
                return tokens[start + n : start + n + k]
        return []


def ngram_lookup_reference(tokens: list[int], n_max: int, n_min: int, k: int) -> list[int]:
    """The slow, obviously correct scan the incremental index is tested against."""
    L = len(tokens)
    for n in range(n_max, n_min - 1, -1):
        if L < n + 1:
            continue
        pat = tokens[L - n :]
        for i in range(L - n - 1, -1, -1):  # latest earlier occurrence first
            if tokens[i : i + n] == pat:
                return tokens[i + n : i + n + k]
    return []
