"""When to speculate and how many tokens to propose.

On/off, per step, by batch size: speculation trades extra target compute (k more tokens per
sequence, plus the proposer's own cost) for fewer steps. It pays at small batch, where a step costs
about the same for 1 or k+1 tokens per sequence, and loses at large batch, where the step is
compute-bound (on the CPU, where mixed-length attention is also slower than pure decode).
Where the break-even lies depends on the hardware, the model pair and the measured acceptance,
so the automatic policy measures it: running sequences are bucketed by powers of two, and in each
bucket the engine keeps the recent throughput (tokens emitted per second of step, proposer
included) of steps with and without speculation, from pure-decode steps only. Each arm is tried
`MIN_SAMPLES` times, then the better one runs, with the other re-tried now and then (rarely when
it lost clearly) so a change in acceptance is noticed. A bucket is only explored once the next
smaller bucket found that speculation wins (it pays less as the batch grows), so large batches
pay no exploration cost unless small ones showed a gain. `max_batch_size` set by the user replaces
all this with a fixed threshold.

k per sequence: from its acceptance estimate a (decayed counts with a prior from the engine-wide
rate), propose token j only while its chance of being accepted, a^j, is at least THETA.
"""
from __future__ import annotations

import math
from collections import deque

MIN_SAMPLES = 3  # pure-decode steps per arm before the policy trusts a bucket
WINDOW = 12  # recent samples per arm
EXPLORE_EVERY = 24  # retry the losing arm every this many steps in a bucket ...
EXPLORE_RARELY = 96  # ... or this many when it lost by more than CLEAR_LOSS
CLEAR_LOSS = 0.85
THETA = 0.3  # propose token j while acceptance**j >= THETA
DECAY = 0.9  # per verification, for a sequence's acceptance counts
PRIOR_WEIGHT = 4.0  # pseudo-trials of the engine-wide rate in a sequence's estimate


class _Arm:
    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (tokens, seconds)

    def rate(self) -> float:
        toks = sum(t for t, _ in self.samples)
        secs = sum(s for _, s in self.samples)
        return toks / secs if secs > 0 else 0.0


class _Bucket:
    __slots__ = ("on", "off", "visits")

    def __init__(self) -> None:
        self.on, self.off, self.visits = _Arm(), _Arm(), 0

    def decided(self) -> bool:
        return len(self.on.samples) >= MIN_SAMPLES and len(self.off.samples) >= MIN_SAMPLES


def bucket_of(num_running: int) -> int:
    """1 -> 1, 2-3 -> 2, 4-7 -> 3, 8-15 -> 4, ..."""
    return max(1, num_running).bit_length()


class SpecPolicy:
    def __init__(self, k_max: int, max_batch_size: int | None, prior_acceptance: float = 0.6):
        self.k_max = k_max
        self.max_batch_size = max_batch_size
        self.buckets: dict[int, _Bucket] = {}
        # Engine-wide acceptance (decayed counts), the prior for new sequences.
        self.acc_s, self.acc_n = prior_acceptance * PRIOR_WEIGHT, PRIOR_WEIGHT
        self.seq_acc: dict[int, tuple[float, float]] = {}  # seq_id -> (accepted, trials)

    # ----- on / off ------------------------------------------------------------------------
    def should_speculate(self, num_running: int) -> bool:
        if self.max_batch_size is not None:
            return num_running <= self.max_batch_size
        i = bucket_of(num_running)
        b = self.buckets.setdefault(i, _Bucket())
        b.visits += 1
        if not b.decided():
            # Speculation pays less as the batch grows, so only explore a bucket once the next
            # smaller one showed that it pays there: a full first wave (or a draft model that
            # loses even at batch 1) then costs no exploration steps at all.
            if i > 1 and not self._wins(i - 1):
                return False
            return len(b.on.samples) <= len(b.off.samples)  # explore: alternate, on first
        on_wins = b.on.rate() >= b.off.rate()
        win, lose = (b.on, b.off) if on_wins else (b.off, b.on)
        every = EXPLORE_RARELY if lose.rate() < CLEAR_LOSS * win.rate() else EXPLORE_EVERY
        return on_wins != (b.visits % every == 0)

    def _wins(self, i: int) -> bool:
        b = self.buckets.get(i)
        return b is not None and b.decided() and b.on.rate() >= b.off.rate()

    def observe_step(self, num_running: int, speculated: bool, tokens: int, seconds: float) -> None:
        """Record one pure-decode step's throughput for the automatic policy."""
        if self.max_batch_size is not None or seconds <= 0:
            return
        b = self.buckets.setdefault(bucket_of(num_running), _Bucket())
        (b.on if speculated else b.off).samples.append((float(tokens), seconds))

    def auto_max_batch_size(self) -> int | None:
        """The largest batch size up to which speculation currently wins in every measured bucket
        (None while no bucket has been measured both ways)."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        best = None
        for i in sorted(self.buckets):
            b = self.buckets[i]
            if not b.decided():
                break
            if b.on.rate() < b.off.rate():
                return best if best is not None else 0
            best = (1 << i) - 1
        return best

    # ----- k per sequence ------------------------------------------------------------------
    def acceptance(self, seq_id: int | None = None) -> float:
        prior = self.acc_s / self.acc_n
        if seq_id is None or seq_id not in self.seq_acc:
            return prior
        s, n = self.seq_acc[seq_id]
        return (s + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)

    def num_tokens(self, seq_id: int) -> int:
        a = min(self.acceptance(seq_id), 0.999)
        if a <= 0:
            return 1
        return max(1, min(self.k_max, int(math.log(THETA) / math.log(a))))

    def observe_verify(self, seq_id: int, proposed: int, accepted: int) -> None:
        """A verification of `proposed` tokens accepting the first `accepted`: accepted + 1
        Bernoulli trials when one was rejected, `proposed` when all passed."""
        if proposed <= 0:
            return
        trials = accepted + (1 if accepted < proposed else 0)
        s, n = self.seq_acc.get(seq_id, (0.0, 0.0))
        self.seq_acc[seq_id] = (DECAY * s + accepted, DECAY * n + trials)
        self.acc_s = 0.99 * self.acc_s + accepted
        self.acc_n = 0.99 * self.acc_n + trials

    def forget(self, keep: set[int]) -> None:
        for sid in [s for s in self.seq_acc if s not in keep]:
            del self.seq_acc[sid]
