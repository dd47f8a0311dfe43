"""One `docgen run` per store at a time: a second run waits, saying which process it waits for.

The lock is an advisory `flock` on `<store>.lock` beside the database, so the kernel releases it
when the holder exits by any means (kill -9 included): a stale lock cannot exist. The holder
writes its pid and start time into the file, so the waiting run can name it. Two runs on one
store would otherwise generate the same chunks twice and race on the same pages; the store's
upserts keep even unlocked writers (the library used directly) from failing.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Callable

from app.docgen.safe_write import UnsafeWrite

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class StoreBusy(ValueError):
    """The store stayed locked by another run past the timeout (the CLI turns it into a message)."""


class StoreLock:
    def __init__(self, store: Path, say: Callable[[str], None], poll_seconds: float = 0.5,
                 timeout: float | None = None) -> None:
        self.path = Path(store).with_name(Path(store).name + ".lock")
        self.say = say
        self.poll = poll_seconds
        self.timeout = timeout  # None: wait as long as the other run takes
        self.fd: int | None = None

    def __enter__(self) -> "StoreLock":
        if fcntl is None:
            self.say("warning: no file locking on this platform; do not start two runs on one store")
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise UnsafeWrite(f"cannot open the lock file {self.path} ({exc.strerror}); if it is a link, remove it")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            raise UnsafeWrite(f"{self.path} is not a plain file (a link?); remove it")
        try:
            waited_since = self._wait(fd)
        except BaseException:  # Ctrl-C while waiting, or the timeout
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        if waited_since is not None:
            self.say(f"the other run ended; continuing after {time.monotonic() - waited_since:.0f}s")
        return self

    def _wait(self, fd: int) -> float | None:
        """Take the lock, waiting (and saying for whom) while another run holds it."""
        waited_since = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return waited_since
            except BlockingIOError:
                if waited_since is None:
                    waited_since = time.monotonic()
                    self.say(f"waiting: another docgen run ({_holder(fd)}) is using the store {self.path.parent}; "
                             "this run continues when it ends (stop it, or pass another --store)")
                elif self.timeout is not None and time.monotonic() - waited_since > self.timeout:
                    raise StoreBusy(f"the store {self.path.parent} is still in use by {_holder(fd)}")
                time.sleep(self.poll)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return text or "pid unknown"
