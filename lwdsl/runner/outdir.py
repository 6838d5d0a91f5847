"""Where a run may write: the rule for ``--out``, and the lock that keeps two runs apart.

A run writes one folder, OUT, and beside it only names derived from OUT's: its staging and
swap folders (``.OUT.staging-*``, ``.OUT.old-*``), ``OUT.lock`` while it runs and ``OUT.failed``
when it fails. The rule, :func:`check_out`, is checked before any work and again just before
the new folder replaces the old one:

- OUT is a path that names a folder: not empty, not the current folder or one above it, not
  a symbolic link, not a mount point;
- if OUT exists it is an empty folder, or a run folder lwdsl wrote (:func:`is_run_folder`: its
  ``report.json`` and ``lwdsl.lock.json`` are lwdsl's and every entry in it is a file lwdsl
  listed), so replacing it loses nothing of the user's; anything else is refused, naming what
  is in the way;
- OUT can be written and replaced: the nearest existing folder above it accepts new entries.

:class:`RunLock` holds ``OUT.lock`` (``fcntl.flock``; released on exit, even a crash) so that a
second run to the same OUT is refused, naming the first one's process, instead of one result
silently replacing the other.

Export paths in recipes are kept inside the run folder and off its own files by
:func:`export_path_problem`, which :class:`lwdsl.language.specs.ExportSpec` applies.

A write that fails because of the place (a full disk, a quota, a read-only or forbidden
folder) becomes :func:`write_error`: an error naming the file, the reason, and on a full disk
the space needed and the space free, never an internal error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import LwdslError, RunError, UsageError
from ..language.specs.export import RUN_FILES, export_path_problem
from ..limits import MAX_NAME_BYTES, size_words

__all__ = [
    "RUN_FILES",
    "FAILED_FILES",
    "is_run_folder",
    "check_out",
    "check_file_out",
    "RunLock",
    "export_path_problem",
    "is_write_error",
    "write_error",
]

#: What a failed run leaves in ``OUT.failed``.
FAILED_FILES = ("last-good.lwz", "report.json")
_LOCK_HEADER = b"lwdsl run lock\n"
_READ_LIMIT = 16 << 20  # a report.json larger than this was not written by lwdsl

PathLike = Union[str, "os.PathLike[str]"]


def _read_json(path: Path) -> object:
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _READ_LIMIT:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


#: errno values that say the place cannot take a write: full, over quota, read-only, forbidden
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_WRITE_ERRNOS = _FULL | {errno.EROFS, errno.EACCES, errno.EPERM}


def is_write_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused by the place: a full disk, a quota, a read-only or
    forbidden folder (an error to report, not a bug)."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS


def _free_bytes(place: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(_nearest_existing(Path(place))).free
    except OSError:
        return None


def write_error(
    exc: OSError, what: str, place: PathLike, *, needed: Optional[int] = None, kind: type = RunError, then: str = ""
) -> LwdslError:
    """The error to show for ``exc``, a failed write while doing ``what``: ``place`` (the file or
    folder the user knows, not a temporary name), the reason, and on a full disk about how much
    is needed (``needed`` bytes) and how much is free there. ``kind`` is the error class (RunError: exit 1 for a run that failed;
    UsageError: exit 2 when nothing could be written); ``then`` says what became of earlier
    outputs.

    >>> import errno
    >>> print(write_error(OSError(errno.EROFS, "Read-only file system"), "fmt", "/m/x.lw", kind=UsageError).render())
    error: fmt: cannot write /m/x.lw: read-only file system
      hint: make the folder writable, or work on a copy in a folder you can write to
    """
    target = os.fspath(place)
    reason = (exc.strerror or str(exc)).lower()
    message = f"{what}: cannot write {target}: {reason}"
    if exc.errno in _FULL:
        free = _free_bytes(Path(place))
        room = [f"about {size_words(needed)} needed" if needed else "", f"{size_words(free)} free there" if free is not None else ""]
        room = [r for r in room if r]
        message += f" ({', '.join(room)})" if room else ""
        hint = f"free some space on the disk that holds {target}, or choose another place; then run again"
    else:
        hint = "make the folder writable, or work on a copy in a folder you can write to"
    if then:
        message += f"; {then}"
    return kind(message, hint=hint)


def is_run_folder(folder: PathLike) -> bool:
    """Whether ``folder`` is a run folder lwdsl wrote and nobody added to.

    It must hold lwdsl's ``report.json`` (with its ``files`` list) and ``lwdsl.lock.json``
    (with ``recipe_sha256``), and nothing that ``report.json`` does not list.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    report, lock = _read_json(folder / "report.json"), _read_json(folder / "lwdsl.lock.json")
    if not isinstance(report, dict) or not isinstance(lock, dict) or "recipe_sha256" not in lock:
        return False
    listed = report.get("files")
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        return False
    return set(_entries(folder)) <= set(listed)


def _is_failed_folder(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and set(_entries(folder)) <= set(FAILED_FILES)


def _shown(entries: list[str], limit: int = 3) -> str:
    names = ", ".join(entries[:limit])
    return names + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _writable_folder(folder: Path, what: str, shown: str) -> None:
    """Refuse unless ``folder`` accepts new entries (tried for real: permissions, read-only
    mounts, ACLs and full inode tables all show)."""
    if not folder.is_dir():
        raise UsageError(
            f"{what} {shown}: {folder} is a file, not a folder",
            hint="choose a path whose folders are folders",
        )
    try:
        probe = tempfile.mkdtemp(prefix=".lwdsl-probe-", dir=folder)
        os.rmdir(probe)
    except OSError as exc:
        raise UsageError(
            f"{what} {shown} cannot be written: {folder} does not accept new files ({(exc.strerror or str(exc)).lower()})",
            hint="choose a folder you can write to",
        ) from None


def check_out(out: PathLike, *, what: str = "--out") -> Path:
    """The absolute path of the run folder ``out``, or a UsageError saying why a run must not
    write there. Nothing is created or changed.

    Raises:
        UsageError: ``out`` is empty, the current folder or one above it, a symbolic link, a
            mount point, a file, a folder lwdsl did not write (or one the user added files
            to), or a place that cannot be written; or ``OUT.failed`` is not lwdsl's.

    Example:
        >>> check_out("")
        Traceback (most recent call last):
        ...
        lwdsl.errors.UsageError: --out is empty: give the run folder to write, e.g. --out runs/try1
    """
    text = os.fspath(out)
    shown = repr(text) if not text.strip() or text != text.strip() else text
    if not text.strip():
        raise UsageError(f"{what} is empty: give the run folder to write, e.g. {what} runs/try1")
    if "\0" in text:
        raise UsageError(f"{what} {shown!r} contains a NUL character")
    path = Path(os.path.abspath(text))
    if path == Path(path.anchor):
        raise UsageError(f"{what} {shown} is the root folder", hint=f"give a new folder, e.g. {what} runs/try1")
    if len(path.name.encode()) + len(".staging-XXXXXXXX.") > MAX_NAME_BYTES:
        raise UsageError(f"{what} {shown}: the folder name is too long (at most {MAX_NAME_BYTES - 20} bytes)")
    cwd = Path.cwd().resolve()
    real = path.resolve()
    if real == cwd or real in cwd.parents:
        where = "the current folder" if real == cwd else f"a folder above the current one ({real})"
        raise UsageError(
            f"{what} {shown} is {where}: a run replaces its folder, so it must be a folder of its own",
            hint=f"give a new folder, e.g. {what} runs/try1",
        )
    if path.is_symlink():
        raise UsageError(
            f"{what} {shown} is a symbolic link (to {os.readlink(path)}): lwdsl replaces only a run folder it wrote",
            hint="give the folder itself, or a new path",
        )
    if os.path.lexists(path):
        if not path.is_dir():
            kind = "a file" if path.is_file() else "not a folder (a device, socket or pipe)"
            raise UsageError(
                f"{what} {shown} is {kind}: lwdsl replaces only a run folder it wrote",
                hint="give a new folder, or remove it yourself if it can go",
            )
        if os.path.ismount(path):
            raise UsageError(
                f"{what} {shown} is a mount point: a run folder is replaced by renaming, which a mount point cannot be",
                hint=f"give a folder inside it, e.g. {what} {Path(text) / 'run'}",
            )
        if _entries(path) and not is_run_folder(path):  # an empty folder holds nothing to lose
            entries = _entries(path)
            own = _read_json(path / "report.json")
            listed = set(own.get("files", [])) if isinstance(own, dict) and isinstance(own.get("files"), list) else set()
            extra = [e for e in entries if e not in listed] if listed else entries
            why = (
                f"it holds files lwdsl did not write ({_shown(extra)})"
                if listed
                else f"it is not a run folder of lwdsl's (it holds {_shown(entries)})"
            )
            raise UsageError(
                f"{what} {shown} exists and {why}: lwdsl replaces only a run folder it wrote",
                hint="give a new folder, or move those files away first",
            )
        _writable_folder(path, what, shown)  # moving a folder to a new parent rewrites its `..`
    failed = path.parent / f"{path.name}.failed"
    if os.path.lexists(failed) and not _is_failed_folder(failed):
        raise UsageError(
            f"{what} {shown}: {failed} exists and is not lwdsl's (a failed run would replace it)",
            hint="move it away, or give another --out",
        )
    _writable_folder(_nearest_existing(path.parent), what, shown)
    return path


def check_file_out(out: PathLike, *, suffix: str = ".lwz", what: str = "--out") -> Path:
    """The absolute path of a weights file to write, or a UsageError: it must end with
    ``suffix``, and may replace only a file of that kind that lwdsl wrote (a ``.lwz`` archive),
    never a folder or another file.

    Example:
        >>> check_file_out("weights.txt")
        Traceback (most recent call last):
        ...
        lwdsl.errors.UsageError: --out weights.txt: the weights file must end with .lwz
    """
    text = os.fspath(out)
    if not text.strip():
        raise UsageError(f"{what} is empty: give the file to write, e.g. {what} lenet5.lwz")
    path = Path(os.path.abspath(text))
    if os.path.lexists(path) and path.is_dir():
        raise UsageError(f"{what} {text} is a folder: give a file name inside it, e.g. {Path(text) / ('model' + suffix)}")
    if path.suffix != suffix:
        raise UsageError(f"{what} {text}: the weights file must end with {suffix}")
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_file() or not _is_lwz(path):
            raise UsageError(
                f"{what} {text} exists and is not a weights file lwdsl wrote: it would be overwritten",
                hint="give a new file name, or remove it yourself if it can go",
            )
    _writable_folder(_nearest_existing(path.parent), what, text)
    return path


def _is_lwz(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "__meta__.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


class RunLock:
    """``OUT.lock`` beside the run folder, held for the whole run.

    ``with RunLock(out):`` refuses (UsageError) while another process holds it, naming that
    process. The lock is ``flock`` on an open file, so the kernel drops it when the holder exits
    in any way; the file is removed when the holder is done. A file of that name that is not a
    lwdsl lock is never touched.
    """

    def __init__(self, out: PathLike) -> None:
        out = Path(os.path.abspath(os.fspath(out)))
        self.path = out.parent / f"{out.name}.lock"
        self.out = out
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # a holder may remove the file between our open and our lock
            fd = self._open()
            if self._lock(fd) and self._same_file(fd):
                os.ftruncate(fd, 0)
                os.write(fd, _LOCK_HEADER + f"pid {os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise UsageError(f"could not lock {self.path}: it keeps changing")  # pragma: no cover

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot create the lock file {self.path}: {(exc.strerror or str(exc)).lower()}") from None
        info = os.fstat(fd)
        head = os.pread(fd, len(_LOCK_HEADER), 0) if info.st_size else b""
        if not stat.S_ISREG(info.st_mode) or (info.st_size and head != _LOCK_HEADER):
            os.close(fd)
            raise UsageError(
                f"{self.path} exists and is not a lock file of lwdsl's; it is left as it is",
                hint="move it away, or give another --out",
            )
        return fd

    def _lock(self, fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: the file's existence is the lock
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip().splitlines()[1:]
            os.close(fd)
            raise UsageError(
                f"another lwdsl run is writing {self.out} ({' '.join(holder) or 'process unknown'}); "
                f"this run was refused so that neither result is lost",
                hint="wait for it to finish, or give another --out",
            ) from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if self._same_file(fd):
                os.unlink(self.path)
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def claimed(out: Optional[PathLike]) -> Iterator[Optional[Path]]:
    """``check_out`` then hold :class:`RunLock` for the block (nothing when ``out`` is None)."""
    if out is None:
        yield None
        return
    path = check_out(out)
    with RunLock(path):
        yield path


