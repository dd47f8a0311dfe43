"""When a doc that failed its checks is worth a second attempt, and what that attempt changes.

Retrying text cut off at the token limit with the same limit mostly gives another cut-off text,
so a `cut_off` failure is retried only with a larger limit (RETRY_FACTOR times the first one,
capped so prompt + new tokens fit the model's window), and not at all when no larger limit fits.
Every other failure gets one retry with the same limit and a note naming the failures.
`RetryStats` counts, per check, the chunks retried for it and the retries after which it passes.

A check whose first GIVE_UP_AFTER retries in a run fixed none is not retried again in that run
(`RetryStats.hopeless`): measured with the trained 13M model, note retries fixed 1 of ~100
`identifiers`/`params`/`returns`/`raises` failures (BENCHMARKS.md), so each was a generation spent
for nothing, often on the dependency graph's critical path. The flag says so. Which chunks got the
first retries depends on completion order, so with this rule two runs may retry different chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CUT_OFF = "cut_off"
RETRY_FACTOR = 2  # a cut-off doc's retry may use this many times the first attempt's new tokens
GIVE_UP_AFTER = 8  # a check whose first this-many retries in a run fixed none is not retried again


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    max_new_tokens: int = 0  # the retry's own limit; 0: the generator's default
    reason: str = ""  # why there is no retry (goes into the flags)


def decide_retry(causes: set[str], limit: int | None, window: int | None, retry_prompt_tokens: int,
                 hopeless: dict[str, int] | None = None) -> RetryDecision:
    """`limit`: the first attempt's max new tokens (None: the generator does not say); `window`: the
    model's context (None: unknown, e.g. a server that does not report it: only the factor caps it);
    `retry_prompt_tokens`: the retry's prompt (the first one plus the failure note); `hopeless`: checks
    whose retries fixed nothing so far in this run (check -> retries), not worth another one."""
    hopeless = hopeless or {}
    if causes and all(c in hopeless for c in causes):
        said = ", ".join(f"{c} ({hopeless[c]} retries)" for c in sorted(causes))
        return RetryDecision(False, reason=f"not retried: no retry of {said} fixed it earlier in this run")
    if CUT_OFF not in causes:
        return RetryDecision(True)
    if not limit:
        return RetryDecision(False, reason="not retried: the generator does not say its token limit, so a "
                                           "larger one cannot be chosen")
    larger = RETRY_FACTOR * limit
    if window:
        larger = min(larger, window - retry_prompt_tokens)
    if larger <= limit:
        return RetryDecision(False, reason=f"not retried: {retry_prompt_tokens} prompt tokens leave no room in the "
                                           f"{window}-token window for more than {limit} new tokens")
    return RetryDecision(True, max_new_tokens=larger)


@dataclass
class RetryStats:
    """Per check name: chunks retried because it failed, and retries after which it passed."""

    retried: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    not_retried: dict[str, int] = field(default_factory=dict)  # failed, but no retry could help (cut off, no room)

    def record(self, first: set[str], second: set[str] | None) -> None:
        """`second`: the retry's failing checks; None when the retry itself errored (nothing fixed)."""
        for cause in first:
            self.retried[cause] = self.retried.get(cause, 0) + 1
            if second is not None and cause not in second:
                self.fixed[cause] = self.fixed.get(cause, 0) + 1

    def hopeless(self, after: int = GIVE_UP_AFTER) -> dict[str, int]:
        """Checks retried at least `after` times (retries finished) and never fixed: check -> retries.
        `after` 0: none (always retry)."""
        if after <= 0:
            return {}
        return {c: n for c, n in self.retried.items() if n >= after and not self.fixed.get(c)}

    def skipped(self, first: set[str]) -> None:
        for cause in first:
            self.not_retried[cause] = self.not_retried.get(cause, 0) + 1

    def by_check(self) -> dict[str, dict[str, int]]:
        names = sorted(set(self.retried) | set(self.not_retried))
        return {c: {"retried": self.retried.get(c, 0), "fixed": self.fixed.get(c, 0),
                    "not_retried": self.not_retried.get(c, 0)} for c in names}
