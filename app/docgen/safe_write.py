"""Every file docgen writes goes through here: atomic, and never through a link.

A write opens the confining folder (a scanned tree, the output folder or the store folder) and
then each folder below it with O_NOFOLLOW, relative to the previous one's descriptor, so a
symbolic link anywhere on the way (`docs -> /elsewhere`) is refused and a link swapped in after
the check cannot redirect the write. The new content goes to a temporary file in the target's
own folder, is fsynced, gets the old file's mode, and is renamed over the target: a reader (or a
kill at any moment) sees the old file or the new one, never a truncated one. A target that is a
symbolic link, not a regular file, or has other hard links (st_nlink > 1: writing would change
the other name too, or silently split them) is refused with `UnsafeWrite`.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path, PurePosixPath

TMP_SUFFIX = ".docgen-tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafeWrite(ValueError):
    """A write refused because the target or a folder on its way is a link, or not a plain file."""


def _parts(rel: str | os.PathLike) -> list[str]:
    parts = list(PurePosixPath(Path(rel).as_posix()).parts)
    if not parts or any(p in ("", ".", "..", "/") for p in parts):
        raise UnsafeWrite(f"{rel}: not a plain relative path")
    return parts


@contextlib.contextmanager
def _open_parent(confine: Path, parts: list[str], create: bool):
    """A descriptor of the folder holding `parts[-1]`, reached without following any link."""
    try:
        fd = os.open(confine, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeWrite(f"{confine}: cannot open the folder ({exc.strerror}); it must be a real folder, "
                          "not a symbolic link") from exc
    try:
        where = confine
        for name in parts[:-1]:
            where = where / name
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o777, dir_fd=fd)
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:  # ELOOP/ENOTDIR: a link or a file where a folder should be
                raise UnsafeWrite(f"{where} is a symbolic link or not a folder; docgen does not write through "
                                  "links") from exc
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _check_target(fd: int, name: str, where: Path) -> os.stat_result | None:
    """The target's stat (None when it does not exist yet), or UnsafeWrite."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeWrite(f"{where} is a symbolic link; docgen does not write through links")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeWrite(f"{where} is not a regular file")
    if st.st_nlink > 1:
        raise UnsafeWrite(f"{where} has {st.st_nlink - 1} other hard link(s); writing it would change or split "
                          "files outside docgen's reach, so it is left alone")
    return st


def atomic_write(confine: str | os.PathLike, rel: str | os.PathLike, data: bytes, create_dirs: bool = True) -> Path:
    """Replace `confine/rel` with `data` atomically; `confine` is a folder the caller trusts (the
    user named it or it was validated), `rel` must stay inside it without crossing a link."""
    confine = Path(confine)
    parts = _parts(rel)
    name, where = parts[-1], confine.joinpath(*parts)
    with _open_parent(confine, parts, create_dirs) as fd:
        st = _check_target(fd, name, where)
        _remove_stale_temps(fd)
        tmp = f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        # O_EXCL|O_NOFOLLOW: never opens something planted under the temporary name; mode 0o666 lets the
        # umask decide for a new file, as an ordinary open would.
        tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                      0o666, dir_fd=fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(tfd, view):]
                if st is not None:
                    os.fchmod(tfd, stat.S_IMODE(st.st_mode))
                os.fsync(tfd)
            finally:
                os.close(tfd)
            _check_target(fd, name, where)  # swapped for a link while we wrote: still refused
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise
        with contextlib.suppress(OSError):  # the rename itself survives a power cut only with this
            os.fsync(fd)
    return where


def write_text(confine: str | os.PathLike, rel: str | os.PathLike, text: str, encoding: str = "utf-8",
               errors: str = "strict") -> Path:
    """`atomic_write` of text; newlines are written exactly as they are in `text`."""
    return atomic_write(confine, rel, text.encode(encoding, errors))


def remove(confine: str | os.PathLike, rel: str | os.PathLike) -> bool:
    """Delete `confine/rel` (a regular file, reached without links); False when it was already gone."""
    confine = Path(confine)
    parts = _parts(rel)
    try:
        with _open_parent(confine, parts, create=False) as fd:
            if _check_target(fd, parts[-1], confine.joinpath(*parts)) is None:
                return False
            os.unlink(parts[-1], dir_fd=fd)
            return True
    except FileNotFoundError:
        return False


_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$")
_swept: set[tuple[int, int]] = set()  # folders (device, inode) already swept by this process


def _remove_stale_temps(fd: int) -> None:
    """Temporary files killed earlier writes left in this folder (ours by their name), removed on this
    process's first write there: once per folder, so writing n pages costs one listing, not n."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) in _swept:
        return
    _swept.add((st.st_dev, st.st_ino))
    for entry in os.listdir(fd):
        if _TMP_NAME.match(entry):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)


def check_location(path: Path, base: Path, what: str, flag: str, name: str = "") -> None:
    """A default location (`base/docs`, `base/.docgen`) must not lead out of `base` through a link:
    the user named `base`, not wherever a link in the repository points."""
    real, real_base = os.path.realpath(path), os.path.realpath(base)
    if os.path.commonpath([real, real_base]) != real_base or _has_link(path, base):
        raise UnsafeWrite(
            f"the default {what} {path} is (or passes through) a symbolic link to {real}; docgen does not "
            f"follow links in the repository. Pass {flag} {os.path.join(real, name) if name else real} to write there on "
            f"purpose, or {flag} another location")


def _has_link(path: Path, base: Path) -> bool:
    try:
        rel = path.relative_to(base)
    except ValueError:
        return False
    cur = base
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            return True
        if not cur.exists():
            return False
    return False


def refuse_link(path: Path) -> None:
    """For files written in place (the SQLite store and its journals): refuse a link, allow absence."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeWrite(f"{path} is a symbolic link; docgen does not write through links")
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise UnsafeWrite(f"{path} has other hard links; docgen does not write through them")
