"""Durable outputs: atomic files and directories, completion records, directory locks, safe names.

One job: whatever a command writes is either whole or absent, is written by one process at a time, and says
which path failed. The rules (docs/GUARANTEES.md lists them with the tests that back them):

* ``atomic_write`` / ``write_bytes`` / ``write_text`` / ``write_json`` / ``copy_file``: the bytes go to a
  temporary name in the destination's folder, are fsync'ed and renamed over the destination
  (``os.replace``, atomic on POSIX), and the folder entry is fsync'ed. On any error the temporary file is
  removed and the ``OSError`` raised names the destination (including ``ENOSPC``).
* ``build_dir``: a directory is built under a temporary sibling name and swapped in whole (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames), so readers see the old folder or the new one.
* Completion records (``RECORD`` = ``COMPLETE.json``): ``write_record`` is the last write of an output and
  lists every file with its size and SHA-256, plus the spec that produced it; ``mark_incomplete`` replaces
  it before an output is rewritten in place. ``verify_record`` / ``check_member`` refuse
  (``IncompleteOutput``, naming the file) an output whose record is missing, says "incomplete" or
  disagrees with the files or spec.
* ``DirLock``: an exclusive ``fcntl`` lock on ``<dir>/.lock``, taken without waiting; the holder's pid,
  command line, host and start time are written into the lock file and named in the ``DirLocked`` error.
  The kernel drops the lock when the holder exits, even on kill -9. It is a POSIX record lock
  (``fcntl.lockf``), not ``flock``: forked workers (``multiprocessing``) do not inherit it, so workers
  orphaned by a killed parent cannot keep a directory locked. A process holds a directory's lock once
  (a second ``DirLock`` on it in the same process is refused too).
* ``check_name``: names that become paths or go into generated scripts match ``SAFE_NAME`` (and are not
  ``.`` / ``..``); ``shell_join`` quotes every value of a generated shell command (``shlex.quote``).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

RECORD = "COMPLETE.json"
LOCK = ".lock"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_open = open  # the one place files are opened for writing (tests inject faults here)


# ---------------------------------------------------------------------------------------------------------
# Names and shell quoting


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it matches ``SAFE_NAME`` and is not ``.``/``..``; ValueError saying ``what`` otherwise."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} is not a safe name: use letters, digits, '_', '.', '-' "
                         "(not '.' or '..'); it becomes a path and goes into generated scripts")
    return name


def shell_join(args: Sequence[Any]) -> str:
    """One shell command line from ``args``, every value quoted with ``shlex.quote``."""
    return " ".join(shlex.quote(str(a)) for a in args)


# ---------------------------------------------------------------------------------------------------------
# Atomic files


def named_error(e: OSError, path: str) -> OSError:
    """``e`` with ``path`` as its file name (same errno), so the message names what failed."""
    if getattr(e, "filename", None) == path:
        return e
    return OSError(e.errno, e.strerror or str(e), path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _temp_sibling(path: str, tag: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", encoding: str | None = None, newline: str | None = None
                 ) -> Iterator[IO]:
    """Yields a file whose contents replace ``path`` only when the ``with`` block ends without error.

    Raises:
      OSError naming ``path`` (not the temporary name) for any I/O error; the temporary file is removed.
    """
    path = os.fspath(path)
    tmp = _temp_sibling(path, "tmp")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        with _open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(tmp))
    except OSError as e:
        _remove(tmp)
        raise named_error(e, path) from e
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str, data: bytes, chunk: int = 1 << 20) -> None:
    """Writes ``data`` to ``path`` atomically (in ``chunk``-byte writes)."""
    with atomic_write(path, "wb") as f:
        for i in range(0, len(data), chunk):
            f.write(data[i:i + chunk])


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """Writes ``json.dump(obj)`` to ``path`` atomically (``indent=1`` unless given)."""
    dump_kwargs.setdefault("indent", 1)
    write_text(path, json.dumps(obj, **dump_kwargs))


def copy_file(src: str, dst: str) -> None:
    """Copies ``src`` to ``dst`` atomically; OSError names whichever of the two failed."""
    try:
        src_f = open(src, "rb")  # noqa: SIM115 (closed below; errors name src)
    except OSError as e:
        raise named_error(e, src) from e
    with src_f, atomic_write(dst, "wb") as f:
        shutil.copyfileobj(src_f, f, 1 << 20)


# ---------------------------------------------------------------------------------------------------------
# Directories built aside


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two existing paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def swap_in(built: str, final: str) -> None:
    """Puts the directory ``built`` at ``final``, replacing (then deleting) what was there."""
    try:
        if not os.path.exists(final):
            os.rename(built, final)
        elif _exchange(built, final):
            shutil.rmtree(built)  # now the old folder
        else:
            old = _temp_sibling(final, "old")
            os.rename(final, old)
            os.rename(built, final)
            shutil.rmtree(old)
        _fsync_dir(os.path.dirname(os.path.abspath(final)))
    except OSError as e:
        raise named_error(e, final) from e


@contextlib.contextmanager
def build_dir(final: str) -> Iterator[str]:
    """Yields an empty temporary sibling of ``final``; on success it replaces ``final`` whole.

    Leftovers of builds of ``final`` that were killed are removed first (the caller holds the lock of the
    parent folder, so no one else is building it). On error the temporary folder is removed.
    """
    final = os.path.abspath(final)
    head, tail = os.path.split(final)
    os.makedirs(head, exist_ok=True)
    for name in os.listdir(head):
        if name.startswith((f".{tail}.build-", f".{tail}.old-")):
            _remove(os.path.join(head, name))
    tmp = _temp_sibling(final, "build")
    os.makedirs(tmp)
    try:
        yield tmp
        swap_in(tmp, final)
    except BaseException:  # OSErrors already name their file (atomic_write, swap_in)
        _remove(tmp)
        raise


# ---------------------------------------------------------------------------------------------------------
# Completion records


class IncompleteOutput(ValueError):
    """An output whose completion record is missing, incomplete or disagrees with its files or spec."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise named_error(e, path) from e
    return h.hexdigest()


def _file_entry(path: str) -> dict[str, Any]:
    return {"bytes": os.path.getsize(path), "sha256": sha256_of(path)}


def write_record(directory: str, kind: str, spec: Mapping[str, Any], files: Iterable[str]) -> dict:
    """Writes ``<directory>/COMPLETE.json`` (the output's last write): ``kind``, ``spec``, and per file
    (relative to ``directory``) its size in bytes and SHA-256."""
    record = {"kind": kind, "complete": True, "spec": dict(spec),
              "files": {rel: _file_entry(os.path.join(directory, rel)) for rel in sorted(set(files))},
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(os.path.join(directory, RECORD), record)
    return record


def mark_incomplete(directory: str, kind: str, spec: Mapping[str, Any]) -> list[str]:
    """Replaces the record of ``directory`` by an "incomplete" one before its files are rewritten in place.

    Returns the files the previous record listed (also those of a previous unfinished rewrite), which the
    caller removes if it does not rewrite them.
    """
    os.makedirs(directory, exist_ok=True)
    old = read_record(directory) or {}
    previous = sorted(set(old.get("files", {})) | set(old.get("previous", [])))
    write_json(os.path.join(directory, RECORD), {"kind": kind, "complete": False, "spec": dict(spec),
                                                 "files": {}, "previous": previous})
    return previous


def read_record(directory: str) -> dict | None:
    """The record of ``directory``, or None if it has none; IncompleteOutput if it is unreadable."""
    path = os.path.join(directory, RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IncompleteOutput(f"{path}: unreadable completion record ({e})") from e


def _check_file(directory: str, rel: str, entry: Mapping[str, Any]) -> None:
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
        raise IncompleteOutput(f"{path}: missing (listed in {os.path.join(directory, RECORD)})")
    size = os.path.getsize(path)
    if size != entry.get("bytes"):
        raise IncompleteOutput(f"{path}: {size} bytes, its completion record says {entry.get('bytes')}")
    if sha256_of(path) != entry.get("sha256"):
        raise IncompleteOutput(f"{path}: content differs from its completion record (sha256)")


def _check_complete(directory: str, record: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    path = os.path.join(directory, RECORD)
    if record is None:
        raise IncompleteOutput(f"{path}: missing: {directory} is not a finished {kind} output "
                               "(interrupted, or written by an older version): write it again")
    if record.get("kind") != kind:
        raise IncompleteOutput(f"{path}: a {record.get('kind')!r} record, expected {kind!r}")
    if not record.get("complete"):
        raise IncompleteOutput(f"{path}: {directory} is incomplete (its writer was interrupted): "
                               "write it again")
    return record


def verify_record(directory: str, kind: str, spec: Mapping[str, Any] | None = None) -> dict:
    """The complete record of ``directory`` after checking every listed file (size, SHA-256) and ``spec``.

    Raises:
      IncompleteOutput naming the record or the file that disagrees.
    """
    record = dict(_check_complete(directory, read_record(directory), kind))
    if spec is not None and record.get("spec") != dict(spec):
        raise IncompleteOutput(f"{os.path.join(directory, RECORD)}: made from spec {record.get('spec')}, "
                               f"expected {dict(spec)}")
    for rel, entry in record["files"].items():
        _check_file(directory, rel, entry)
    return record


def check_member(path: str, kind: str) -> None:
    """Checks ``path`` against the record of its folder, when that folder has one.

    A folder without a record was not written by an omni_tf command that keeps one (e.g. hand-made test
    data) and is accepted; a file the record does not list (added later, e.g. ``spm.model``) too.

    Raises:
      IncompleteOutput when the record says incomplete, or the listed file's size or SHA-256 differs.
    """
    directory, rel = os.path.split(os.path.abspath(path))
    record = read_record(directory)
    if record is None:
        return
    record = _check_complete(directory, record, kind)
    if rel in record["files"]:
        _check_file(directory, rel, record["files"][rel])


# ---------------------------------------------------------------------------------------------------------
# One writer per directory


class DirLocked(RuntimeError):
    """Another process holds the lock of a directory this command writes."""


_HELD: set[str] = set()  # directories this process has locked (POSIX locks do not conflict within one)


class DirLock:
    """Exclusive, non-blocking ``fcntl.lockf`` on ``<directory>/.lock`` (created with the directory).

    Use as a context manager; raises ``DirLocked`` naming the holder (pid, command, host, since).
    """

    def __init__(self, directory: str, command: str | None = None):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, LOCK)
        self.command = command or " ".join([os.path.basename(sys.executable), *sys.argv])
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        if self.directory in _HELD:
            raise DirLocked(f"{self.directory} is already locked by this process (pid {os.getpid()})")
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise named_error(e, self.path) from e
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise named_error(e, self.path) from e
            raise DirLocked(f"{self.directory} is in use by another process ({holder or 'holder unknown'}); "
                            f"one writer per directory: wait for it or use another directory") from None
        _HELD.add(self.directory)
        info = json.dumps({"pid": os.getpid(), "command": self.command, "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            _HELD.discard(self.directory)

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
