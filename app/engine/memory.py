"""This process's resident memory, for the load report (Linux /proc; None elsewhere).

`reset_peak()` restarts the kernel's high-water mark (VmHWM) by writing "5" to
/proc/self/clear_refs (Linux >= 4.0), so `peak_rss()` afterwards is the peak of what follows, not of
the whole process's life. Resident memory counts the file pages of memory-mapped weights that are
touched (they are the model's memory when a cache file is mapped).
"""
from __future__ import annotations


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss() -> int | None:
    return _status_kb("VmRSS")


def peak_rss() -> int | None:
    return _status_kb("VmHWM")


def reset_peak() -> bool:
    """True when the high-water mark was reset (else peak_rss() is the process's lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available() -> int | None:
    """MemAvailable of the machine (bytes)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


_LIBC = None


def trim_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere).

    Streaming quantization frees a layer's temporaries while the layer's small results stay, so
    glibc keeps the freed pages between live blocks resident; trimming after each layer keeps
    the load's RSS near what is really in use."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
