"""Where a job by reference may read and write under the data root: a tenant in its own
directory, `<data root>/<tenant dir>/`, and read only in the prefixes the operator shares with
it (`PREDQ_DATA_SHARED`, named `@prefix/...`); a schedule, declared by the operator, anywhere
under the root.

A tenant's name is its directory's name when it is a safe one (letters, digits, `.`, `_`, `-`,
starting with a letter or a digit, at most 64 characters: never `.`, `..`, a hidden name or an
option); any other name maps to `_` and 32 hex digits of its sha256, which no safe name can
equal. Every message names a path as its tenant wrote it, never as the server sees it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.core.errors import InvalidInput

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHARED_MARK = "@"  # `@prefix/file`: a file of a prefix shared with the tenant
NAME_MAX = 255  # bytes in one path component (Linux, macOS)
PATH_MAX = 4000  # bytes in a whole path as given


def tenant_dir(tenant: str) -> str:
    """The directory (under the data root) of `tenant`'s files."""
    if SAFE_NAME.fullmatch(tenant):
        return tenant
    return "_" + hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Located:
    """A checked path: the real file, its name relative to the data root (what a job
    stores), the directory (relative to the root; "" is the root) its real location must stay
    inside, and the name errors show."""

    real: Path
    path: str
    base: str
    shown: str


@dataclass(frozen=True)
class Area:
    """What one submitter may name: a tenant (its directory, and read-only shared prefixes)
    or, with `tenant` None, the operator (a schedule: the whole root)."""

    data_root: str
    tenant: str | None = None
    shared: Sequence[tuple[str, str]] = ()

    def root(self, field: str) -> Path:
        if not self.data_root:
            raise InvalidInput(field, "this server has no data root (PREDQ_DATA_ROOT): jobs "
                                      "by reference are off; upload the rows instead")
        return Path(self.data_root).resolve()

    def input(self, given: object) -> Located:
        """`given` as an existing regular file the submitter may read."""
        return self._locate(given, "input", writing=False)

    def output(self, given: object) -> Located:
        """`given` as a file the submitter may write (it need not exist)."""
        return self._locate(given, "output", writing=True)

    def _locate(self, given: object, field: str, writing: bool) -> Located:
        root = self.root(field)
        text = checked_text(given, field)
        if self.tenant is None:
            name = _operator_path(text, root, field)
            base, shown = "", name
        elif text.startswith(SHARED_MARK) and not writing:
            name = _relative(text[len(SHARED_MARK):], field)
            base, shown = self._granted(name, field), text
        else:
            if text.startswith(SHARED_MARK):
                raise InvalidInput(field, "a shared prefix (@...) is read only: write the "
                                          "result to your own directory")
            base = tenant_dir(self.tenant)
            shown = _relative(text, field)
            name = f"{base}/{shown}"
        located = Located(real_path(root, name, field, shown), name, base, shown)
        confined(root, located, field)
        return check_file(located, field, writing)

    def _granted(self, name: str, field: str) -> str:
        for tenant, prefix in self.shared:
            if tenant in ("*", self.tenant) and (name + "/").startswith(prefix + "/"):
                return prefix
        raise InvalidInput(field, f"{SHARED_MARK}{name[:200]!r}: no prefix of the data root "
                                  "is shared with this tenant there (ask the operator)")


def checked_text(given: object, field: str) -> str:
    """A path as text: not empty, no NUL, no component over 255 bytes."""
    if not isinstance(given, str) or not given.strip() or "\x00" in given:
        raise InvalidInput(field, "a path relative to your directory under the data root, "
                                  "e.g. in/rows.npy")
    try:
        encoded = given.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "a path of UTF-8 text (it holds a lone surrogate)") from None
    if len(encoded) > PATH_MAX:
        raise InvalidInput(field, f"a path of at most {PATH_MAX} bytes")
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise InvalidInput(field, f"{given[:60]!r}...: a file or directory name is longer "
                                  f"than {NAME_MAX} bytes")
    return given


def _relative(text: str, field: str) -> str:
    """A tenant's path, normalized: relative, no `..`."""
    if text.startswith("/") or PurePosixPath(text).is_absolute():
        raise InvalidInput(field, f"{text[:200]!r} is an absolute path: name the file "
                                  "relative to your directory under the data root")
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if ".." in parts:
        raise InvalidInput(field, f"{text[:200]!r}: '..' is not allowed; name a file in "
                                  "your directory under the data root")
    if not parts:
        raise InvalidInput(field, f"{text[:200]!r} names no file")
    return "/".join(parts)


def _operator_path(text: str, root: Path, field: str) -> str:
    """A schedule's (or an older job's) path: relative to the root, or absolute inside it."""
    path = Path(text)
    if path.is_absolute():
        normal = Path(os.path.normpath(path))
        if normal != root and root not in normal.parents:
            raise InvalidInput(field, f"{text[:200]!r} is an absolute path outside the data "
                                      "root")
        return normal.relative_to(root).as_posix()
    return _relative(text, field)


def real_path(root: Path, name: str, field: str, shown: str) -> Path:
    """The real location of `name` (symbolic links followed); a loop or an over-long name
    is the client's mistake, named as such."""
    try:
        return (root / name).resolve()
    except RuntimeError:
        raise InvalidInput(field, f"{shown[:200]!r}: a loop of symbolic links") from None
    except OSError as exc:
        raise InvalidInput(field, f"{shown[:200]!r}: {exc.strerror or 'cannot be read'}"
                           ) from None


def confined(root: Path, located: Located, field: str) -> None:
    """The real location must be inside the located base (a link may not lead out)."""
    base = root / located.base if located.base else root
    try:
        inside = base.resolve()
    except (RuntimeError, OSError):
        raise InvalidInput(field, f"{located.shown[:200]!r}: its directory cannot be "
                                  "resolved") from None
    if located.real != inside and inside not in located.real.parents:
        where = "your directory" if located.base and not located.shown.startswith(
            SHARED_MARK) else "the shared prefix" if located.base else "the data root"
        raise InvalidInput(field, f"{located.shown[:200]!r} leads outside {where} (through a "
                                  "symbolic link)")


def check_file(located: Located, field: str, writing: bool) -> Located:
    """An input must be a regular file with one link; an output may not be a directory, nor
    an existing file with another link."""
    shown = located.shown[:200]
    try:
        st = located.real.stat()
    except FileNotFoundError:
        if writing:
            return located
        raise InvalidInput(field, f"{shown!r}: no such file") from None
    except OSError as exc:
        raise InvalidInput(field, f"{shown!r}: {exc.strerror or 'cannot be read'}") from None
    if located.real.is_dir():
        raise InvalidInput(field, f"{shown!r} is a directory")
    if not located.real.is_file():
        raise InvalidInput(field, f"{shown!r} is not a regular file")
    if st.st_nlink > 1:
        raise InvalidInput(field, f"{shown!r} has {st.st_nlink} hard links: a file with more "
                                  "than one is refused (it could be another's file)")
    return located


def scrub(text: str, *places: str) -> str:
    """`text` without the server's absolute paths of `places` (data root, model store)."""
    for place in sorted({p for p in places if p}, key=len, reverse=True):
        for form in {place, str(Path(place).resolve())}:
            text = text.replace(form.rstrip("/") + "/", "").replace(form, "<server path>")
    return text


def recheck(data_root: str, path: str, base: str, shown: str, field: str, writing: bool
            ) -> Path:
    """A stored reference checked again where it is used (a worker): the link or file
    swapped since the submit leads nowhere."""
    root = Area(data_root).root(field)
    located = Located(real_path(root, path, field, shown), path, base, shown)
    confined(root, located, field)
    return check_file(located, field, writing).real
