"""Checking a `.keras` archive before Keras opens it (private).

`keras-reg shrink` hands its input to `keras.saving.load_model`, which reads
`config.json` and (for a model that fits in memory) `model.weights.h5` whole
into memory, and, when the archive holds more than three members, extracts
every member into a temporary folder. A crafted zip could make those steps
take gigabytes from a few kilobytes. `screen_archive` reads only the zip's
central directory (never a member's data) and refuses, in one line, a file
that Keras cannot have written or that would take more than these bounds:

- at most `_MAX_MEMBERS` members and a central directory of `_MAX_DIRECTORY_BYTES`;
- only the members Keras writes: `config.json` (at most the reader's 16 MiB),
  `metadata.json` (1 MiB), `model.weights.h5` and files under `assets/`
  (256 MiB in all); no absolute name, no `..`, no duplicate, no encryption,
  stored or deflated only;
- every member within the file, a stored member's sizes equal, and no member
  of more than 1 MiB inflating to more than 100 times its stored size (Keras
  stores members uncompressed; `load_model` uses the same ratio);
- `model.weights.h5` at most half the memory available (the weights are read
  into memory, then held by the model's variables);
- with assets, every member together within the free space of the temporary
  folder, less a margin of 1 GiB (Keras extracts them all there).

Like the reader, this module imports neither Keras nor a backend.
"""

import os
import shutil
import stat
import tempfile
import warnings
import zipfile

from keras_reg._archive import reader
from keras_reg._archive.reader import WEIGHTS_FILE, ArchiveError, printable

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
ASSETS_FOLDER = "assets/"

_MAX_MEMBERS = 10_000
_MAX_DIRECTORY_BYTES = 16 * 2**20
_MAX_METADATA_BYTES = 2**20
_MAX_ASSETS_BYTES = 256 * 2**20
# A member inflating to more than this many times its stored size is a bomb (Keras' ratio)...
_MAX_RATIO = 100
# ... once it is larger than this: small members compress well and cost nothing.
_RATIO_FLOOR = 2**20
# The weights member may take this share of the memory available.
_MEMORY_SHARE = 0.5

NOT_A_ZIP = "not a .keras file (corrupt or truncated zip)"


def screen_archive(path):
    """Refuses a `.keras` file that Keras cannot have written or that is too large to load.

    Reads the zip's central directory only. Raises `ArchiveError` with one
    line that starts with the (escaped) path; returns None for a file that
    passes.
    """
    path = os.fspath(path)
    shown = printable(path)
    try:
        # O_NONBLOCK: a FIFO must not block the open; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ArchiveError(
            f"{shown}: cannot be read: {reader.one_line(exc.strerror or exc)}"
        ) from None
    with os.fdopen(fd, "rb") as raw:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(
                f"{shown}: not a regular file ({reader._file_kind(info.st_mode)}), so not read"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        try:
            _screen(raw, info.st_size)
        except ArchiveError as exc:
            raise ArchiveError(f"{shown}: {exc}") from None


def _screen(raw, size):
    _check_directory(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile's own warnings: this line says it all
        try:
            archive = zipfile.ZipFile(raw, "r")
        except Exception:  # BadZipFile, EOFError, OSError...: a broken file
            raise ArchiveError(NOT_A_ZIP) from None
    with archive:
        members = archive.infolist()
    seen, totals = set(), {"assets": 0, "all": 0}
    for info in members:
        name = info.filename
        _check_name(name)
        if name in seen:
            raise ArchiveError(f"holds '{printable(name)}' twice, which Keras never writes")
        seen.add(name)
        _check_member(info, name, size)
        _check_size(info, name)
        if name.startswith(ASSETS_FOLDER):
            totals["assets"] += info.file_size
            if totals["assets"] > _MAX_ASSETS_BYTES:
                raise ArchiveError(
                    f"its {ASSETS_FOLDER} members inflate to more than the "
                    f"{_MAX_ASSETS_BYTES:,} bytes allowed for a model's assets"
                )
        totals["all"] += info.file_size
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in seen:
            raise ArchiveError(f"no {required} inside, so not a .keras model file")
    if len(members) > 3:  # Keras then extracts every member into a temporary folder
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if totals["all"] > free - reader._DISK_MARGIN:
            raise ArchiveError(
                f"its members inflate to {totals['all']:,} bytes, more than the free space "
                f"in {printable(folder)} allows ({free:,} bytes free)"
            )


def _check_directory(raw):
    """The member count and directory size, from the end record, before zipfile reads them."""
    try:
        end = zipfile._EndRecData(raw)
        entries, directory = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    except AttributeError:  # pragma: no cover - zipfile without these private names
        return
    except Exception:
        raise ArchiveError(NOT_A_ZIP) from None
    if entries > _MAX_MEMBERS:
        raise ArchiveError(
            f"holds {entries:,} members, more than the {_MAX_MEMBERS:,} a .keras file may hold"
        )
    if directory > _MAX_DIRECTORY_BYTES:
        raise ArchiveError(
            f"its zip directory takes {directory:,} bytes, more than the "
            f"{_MAX_DIRECTORY_BYTES:,} a .keras file's may take"
        )


def _check_name(name):
    shown = f"'{printable(name)}'"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"holds a member with an absolute name, {shown}: refused")
    if ".." in parts:
        raise ArchiveError(f"holds a member whose name leaves its folder, {shown}: refused")
    if name in (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE):
        return
    rest = parts[1:-1] if name.endswith("/") else parts[1:]  # a folder entry ends in "/"
    if (
        name.startswith(ASSETS_FOLDER)
        and "\\" not in name
        and "\x00" not in name
        and all(part not in ("", ".") for part in rest)
    ):
        return
    raise ArchiveError(
        f"holds {shown}, which is not a member Keras writes in a .keras file "
        f"({CONFIG_FILE}, {METADATA_FILE}, {WEIGHTS_FILE}, {ASSETS_FOLDER}...)"
    )


def _check_member(info, name, size):
    shown = f"'{printable(name)}'"
    if info.flag_bits & 0x1:
        raise ArchiveError(f"its member {shown} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(
            f"its member {shown} is compressed with method {info.compress_type}, "
            "which Keras never writes"
        )
    if info.header_offset + info.compress_size > size:
        raise ArchiveError(NOT_A_ZIP)
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ArchiveError(
            f"its member {shown} is stored uncompressed but declares {info.file_size:,} bytes "
            f"in {info.compress_size:,}"
        )
    if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * info.compress_size:
        raise ArchiveError(
            f"its member {shown} inflates to {info.file_size:,} bytes from "
            f"{info.compress_size:,}, more than {_MAX_RATIO} times: a zip bomb, refused"
        )


def _check_size(info, name):
    if name == CONFIG_FILE:
        limit = reader._MAX_CONFIG_BYTES
        what = f"{limit:,} a model's config takes"
    elif name == METADATA_FILE:
        limit = _MAX_METADATA_BYTES
        what = f"{limit:,} Keras' metadata takes"
    elif name == WEIGHTS_FILE:
        memory = available_memory()
        if memory is None:
            return
        limit = int(memory * _MEMORY_SHARE)
        what = f"{limit:,} bytes (half the memory available) that loading may hold in memory"
    else:
        return
    if info.file_size > limit:
        raise ArchiveError(f"its {name} declares {info.file_size:,} bytes, more than the {what}")


def available_memory():
    """Bytes of memory available (MemAvailable, within a cgroup's limit), or None."""
    found = []
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    try:  # cgroup v2: a container's limit, less what it uses already
        with open("/sys/fs/cgroup/memory.max", "rb") as limit_file:
            limit = limit_file.read().strip()
        if limit != b"max":
            with open("/sys/fs/cgroup/memory.current", "rb") as current_file:
                found.append(max(0, int(limit) - int(current_file.read())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
