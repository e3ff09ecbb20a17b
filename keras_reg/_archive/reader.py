"""Reading the weights out of a `.keras` file without rebuilding the model (private).

A `.keras` file is a zip holding `config.json`, `metadata.json` and
`model.weights.h5`. Rebuilding the model would import (and run) the code of
its custom layers and constraints; this reader never does: it opens the zip
read-only, reads the HDF5 file with h5py one block of one weight at a time,
and parses `config.json` as plain JSON, only to name weights. It imports
neither Keras nor a backend.

The file is untrusted input. Only a regular file is opened (never a pipe or a
device); memory stays bounded by one block whatever the file declares; a
compressed weights member is inflated only within the free disk space; links,
virtual and external datasets are never followed; a dataset that cannot be
counted (no dataspace, long double, strings) is listed as skipped; a file that
Keras cannot have written (objects reached twice, a hard-link cycle, weights
holding more data than the file) is refused.

Names: Keras stores a layer's weights as `<group>/vars/0`, `<group>/vars/1`,
... with the layer's name as an attribute of `vars`. A weight is named the way
Keras builds `weight.path`: the chain of layer names down to its own layer
(starting with the model's name for a Sequential or subclassed model, not for
a functional one), then the weight's name: `conv2d/kernel`,
`sequential/dense/bias`, `encoder/dense_3/kernel`. The weight's name
(`kernel`, `bias`, `embeddings`, `gamma`, ...) is known from `config.json` for
Keras' own layers whose rule (`keras_reg.rules`) names their stored weights:
Dense, convolutions, EinsumDense, Embedding, recurrent layers and cells,
Batch-, Group- and LayerNormalization; any other weight is named by its stored
position: `my_block/vars/0`. So for models made of those layers the names
equal `weight.path`, and a report of the file matches `sparsity_report(model)`.

Layers quantized by Keras (`model.quantize`) store more weights, named from
their dtype policy's mode (`keras_reg._archive.quantized`): an int8 kernel is
counted as stored, an int4 kernel unpacked and minus its zero points, both
exactly (a stored integer is a zero when it dequantizes to 0); scales and zero
points are counted only with `min_rank=0`. A quantized layer whose stored
layout is not known (gptq, awq, a custom class) is listed as skipped.
"""

import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile

import h5py
import numpy as np

from keras_reg._archive import quantized
from keras_reg._archive.blocks import BLOCK, count_blocks
from keras_reg.rules import rule_for_config

WEIGHTS_FILE = "model.weights.h5"

# config.json only names weights; a larger one is not a model's config.
_MAX_CONFIG_BYTES = 16 * 2**20
# An HDF5 dataset stored in compressed chunks is read a whole chunk at a time.
_MAX_CHUNK_BYTES = 64 * 2**20
# Inflating a compressed weights member leaves this much disk free at least.
_DISK_MARGIN = 2**30
_COPY_BLOCK = 2**20


class ArchiveError(ValueError):
    """A file that is not a readable `.keras` archive; the message is one line."""


def printable(text):
    """`text` with every non-printable character escaped (`\\n`, `\\x1b`, `\\u202e`).

    Names come from untrusted files: a control character must not move the
    cursor, clear the screen, set the terminal's title or start a new line.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def count_weights(path, threshold=0.0, min_rank=0):
    """Counts the zeros of the weights stored in a `.keras` file, without rebuilding the model.

    Each weight is read and counted in blocks (`keras_reg._archive.blocks`): memory
    stays bounded by one block, whatever the size of the file or of a weight.
    A compressed `model.weights.h5` member is inflated, in blocks, into a
    private temporary file that is deleted afterwards; a stored one (as Keras
    writes it) is read in place.

    Args:
        path: path to a `.keras` file. It is opened read-only.
        threshold: non-negative float that fits in float32.
        min_rank: skip (and never read) weights of lower rank.

    Returns:
        `(counted, skipped)`: `counted` a list of `(name, shape, Counts)`,
        layers in the order of the model's config where it is known;
        `skipped` a list of `(name, reason)` for datasets that cannot be
        counted (no dataspace, a dtype no Keras weight has, a link).
        Optimizer variables are left out.

    Raises:
        ArchiveError: the path is missing, is not a regular `.keras` file or
            cannot be read; the message is one line that starts with the path.
    """
    path = os.fspath(path)
    shown = printable(path)
    if not os.path.lexists(path):
        raise ArchiveError(f"{shown}: no such file")
    if os.path.isdir(path):
        raise ArchiveError(f"{shown}: is a directory, not a .keras file")
    if not path.endswith(".keras"):
        raise ArchiveError(
            f"{shown}: not a .keras file (the name must end in .keras; "
            "legacy .h5 files and SavedModel folders are not read)"
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then
        # refuses it (and devices such as /dev/zero) before a byte is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ArchiveError(f"{shown}: cannot be read: {one_line(exc.strerror or exc)}") from None
    with os.fdopen(fd, "rb") as raw:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ArchiveError(f"{shown}: not a regular file ({_file_kind(mode)}), so not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return _count_archive(raw, shown, threshold, min_rank)


def _file_kind(mode):
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def _count_archive(raw, shown, threshold, min_rank):
    try:
        archive = zipfile.ZipFile(raw, "r")
    except Exception as exc:  # BadZipFile, EOFError...: the file is broken
        raise ArchiveError(f"{shown}: corrupt or not a .keras file ({one_line(exc)})") from None
    with archive:
        try:
            info = archive.getinfo(WEIGHTS_FILE)
        except KeyError:
            raise ArchiveError(
                f"{shown}: no {WEIGHTS_FILE} inside, so not a .keras model file"
            ) from None
        try:
            config = _read_config(archive)
        except ArchiveError as exc:
            raise ArchiveError(f"{shown}: {exc}") from None
        with _weights_file(archive, raw, info, shown) as (h5_source, size):
            try:
                with h5py.File(h5_source, "r") as h5:
                    walker = _Walker(config, min_rank, size, threshold)
                    if isinstance(h5_source, _Window):
                        walker.window = h5_source
                    return walker.walk(h5)
            except _Refused as exc:
                raise ArchiveError(f"{shown}: its {WEIGHTS_FILE} is refused: {exc}") from None
            except Exception as exc:  # any failure to parse an untrusted file is its fault
                raise ArchiveError(
                    f"{shown}: its {WEIGHTS_FILE} cannot be read "
                    f"({type(exc).__name__}: {one_line(exc)})"
                ) from None


class _Refused(Exception):
    """A weights file this reader will not count; the message says why."""


class _weights_file:
    """Context manager giving `(file object or path, size)` for the weights member.

    A stored member is a window onto the archive itself (no copy); a
    compressed one is inflated in blocks into a private temporary directory,
    within the free disk space, and removed on exit.
    """

    def __init__(self, archive, raw, info, shown):
        self.archive, self.raw, self.info, self.shown = archive, raw, info, shown
        self.tmpdir = None

    def __enter__(self):
        info, shown = self.info, self.shown
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{shown}: its {WEIGHTS_FILE} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            return _Window(self.raw, _data_offset(self.raw, info, shown), info.file_size), (
                info.file_size
            )
        self.tmpdir = tempfile.mkdtemp(prefix="keras-reg-")  # mode 0700: ours alone
        try:
            return self._inflate()
        except BaseException:
            self.__exit__()
            raise

    def _inflate(self):
        info, shown = self.info, self.shown
        free = shutil.disk_usage(self.tmpdir).free
        if info.file_size > free - _DISK_MARGIN:
            raise ArchiveError(
                f"{shown}: its {WEIGHTS_FILE} inflates to {info.file_size:,} bytes, more than "
                f"the free space in {printable(self.tmpdir)} allows ({free:,} bytes free)"
            )
        target = os.path.join(self.tmpdir, WEIGHTS_FILE)
        written = 0
        try:
            with self.archive.open(info) as source, open(target, "xb") as sink:
                while block := source.read(_COPY_BLOCK):
                    written += len(block)
                    if written > info.file_size:  # more than declared: crafted
                        raise ValueError("it inflates to more than its declared size")
                    sink.write(block)
        except Exception as exc:
            raise ArchiveError(
                f"{shown}: its {WEIGHTS_FILE} cannot be inflated ({one_line(exc)})"
            ) from None
        return target, written

    def __exit__(self, *exc_info):
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return False


def _data_offset(raw, info, shown):
    """Where a stored member's bytes start, from its local header."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ArchiveError(f"{shown}: corrupt or not a .keras file (bad local header)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > os.fstat(raw.fileno()).st_size:
        raise ArchiveError(f"{shown}: corrupt or not a .keras file (truncated {WEIGHTS_FILE})")
    return start


class _Window:
    """A read-only, seekable view of `size` bytes of `raw` from `start` (for h5py)."""

    def __init__(self, raw, start, size):
        self.raw, self.start, self.size, self.pos = raw, start, size, 0

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n=-1):
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        data = os.pread(self.raw.fileno(), end - self.pos, self.start + self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        if not hasattr(os, "preadv"):  # pragma: no cover - not Linux
            data = self.read(len(view))
            view[: len(data)] = data
            return len(data)
        n = max(0, min(len(view), self.size - self.pos))
        if n == 0:
            return 0
        # Straight into h5py's buffer: no intermediate bytes object, no second copy.
        got = os.preadv(self.raw.fileno(), [view[:n]], self.start + self.pos)
        self.pos += got
        return got


def one_line(exc):
    return printable(" ".join(str(exc).split()))


def _read_config(archive):
    """config.json as plain JSON, or None: it only serves to name weights."""
    try:
        info = archive.getinfo("config.json")
    except KeyError:
        return None
    if info.file_size > _MAX_CONFIG_BYTES:
        raise ArchiveError(
            f"its config.json declares {info.file_size:,} bytes, more than the "
            f"{_MAX_CONFIG_BYTES:,} a model's config takes"
        )
    try:
        with archive.open(info) as source:
            config = json.loads(source.read(_MAX_CONFIG_BYTES + 1))
    except Exception:  # broken or too deeply nested: names by position then
        return None
    return config if isinstance(config, dict) else None


def _layer_configs(config):
    """Layer name -> (position in the config, layer config); ambiguous names map to None."""
    found, seen = {}, set()
    stack = [config]  # a walk without recursion: the nesting depth is the file's choice
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            inner = node.get("config")
            # A functional model's entry names its layer at the top level too.
            name = node.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
            cls = node.get("class_name")
            if isinstance(cls, str) and "DTypePolicy" not in cls and isinstance(name, str):
                found[name] = None if name in seen else (len(seen), node)
                seen.add(name)
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def _weight_names(layer, shapes, mode=None, block_size=None):
    """The names of a Keras layer's stored weights, from its layer rule, or None where unsure.

    A layer quantized by Keras (`mode`, from `quantized.layer_mode`) stores
    more weights, named by `quantized.stored_names`.
    """
    if layer is None or any(shape is None for shape in shapes):
        return None
    rule = rule_for_config(layer)  # None for a custom class: its weights may be anything
    cfg = layer.get("config")
    if rule is None or not isinstance(cfg, dict):
        return None
    names = rule.stored_weights(cfg)
    if names is not None and mode is not None:
        names = quantized.stored_names(layer, names, mode, block_size)
    # An otherwise extended layer stores more: fall back to positions.
    if (
        names is None
        or len(names) != len(shapes)
        or any(
            name in rule.kernel_names(None) and len(shape) < 2
            for name, shape in zip(names, shapes, strict=True)
        )
    ):
        return None
    return names


def _natural(key):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _name_of(vars_group, key):
    name = vars_group.attrs.get("name", key)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return str(name)


def _is_bfloat16(ds):
    return ds.attrs.get("dtype") in ("bfloat16", b"bfloat16") and ds.dtype.itemsize == 2


def _why_not_countable(ds):
    """None if `ds` can be counted, else the reason (shown in the report)."""
    if ds.shape is None:
        return "empty dataspace (h5py.Empty), nothing to count"
    if _is_bfloat16(ds):
        return None
    kind, size = ds.dtype.kind, ds.dtype.itemsize
    if kind not in "biuf":
        return f"dtype {ds.dtype} is not numeric"
    if kind == "f" and size > 8:
        return f"dtype float{8 * size} (long double) is not a Keras weight dtype"
    return None


class _Walker:
    def __init__(self, config, min_rank, file_size, threshold):
        self.file_size = file_size
        self.layers = _layer_configs(config) if config else {}
        self.root_class = config.get("class_name") if config else None
        self.min_rank = min_rank
        self.threshold = threshold
        self.budget = file_size  # bytes of datasets left to read
        self.seen = set()
        self.counted, self.skipped = [], []
        self.window = None  # the stored member, read directly where a dataset allows

    def walk(self, h5):
        # Keras builds the layers of a Sequential or subclassed model inside
        # the model's name scope, so their `weight.path` starts with its name;
        # a functional model's layers are built outside it.
        own = h5.get("vars")
        model_name = _name_of(own, "model") if isinstance(own, h5py.Group) else "model"
        prefixed = self.root_class == "Sequential" or "layers" not in h5
        # Depth first, in the order of the recursive walk, with an explicit
        # stack: thousands of nested groups must not exhaust Python's.
        stack = [(h5, [model_name] if prefixed else [], True)]
        while stack:
            group, chain, root = stack.pop()
            stack.extend(reversed(self._visit(group, chain, root)))
        return self.counted, self.skipped

    def _once(self, obj, where):
        # h5py compares objects by their address in the file.
        if obj.id in self.seen:
            raise _Refused(
                f"{printable(where)} is reached twice through hard links (a cycle or a "
                "shared object), which Keras never writes"
            )
        self.seen.add(obj.id)

    def _children(self, group, chain):
        """Sub-groups; links (which could point outside the archive) are listed as skipped."""
        for key in group.keys():
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.HardLink):
                child = group[key]
                if isinstance(child, h5py.Group):
                    yield key, child
            else:
                where = "/".join([*chain, key])
                self.skipped.append((where, f"{type(link).__name__}, not followed"))

    def _visit(self, group, chain, root=False):
        self._once(group, "/".join(chain) or "/")
        children = dict(self._children(group, chain))
        own = children.pop("vars", None)
        if own is not None:
            self._once(own, "/".join([*chain, "vars"]))
            self._read_vars(own, chain or [_name_of(own, "model")])
        if root:
            children.pop("optimizer", None)
        named = []
        for key, child in children.items():
            vars_group = child.get("vars")
            name = _name_of(vars_group, key) if isinstance(vars_group, h5py.Group) else None
            entry = self.layers.get(name) if name else None
            order = entry[0] if entry else float("inf")
            named.append(((order, _natural(key)), child, name))
        return [
            (child, chain + [name] if name else chain, False)
            for _, child, name in sorted(named, key=lambda item: item[0])
        ]

    def _read_vars(self, vars_group, chain):
        datasets, prefix = [], "/".join(chain)
        for key in sorted(vars_group.keys(), key=_natural):
            link = vars_group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                self.skipped.append(
                    (f"{prefix}/vars/{key}", f"{type(link).__name__}, not followed")
                )
                continue
            ds = vars_group[key]
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.is_virtual or ds.external:  # they read other files: never follow them
                self.skipped.append((f"{prefix}/vars/{key}", "reads another file, not followed"))
                continue
            datasets.append((key, ds))
        entry = self.layers.get(chain[-1])
        if entry is None and len(chain) > 1:  # an RNN cell: its layer's config names them
            parent = self.layers.get(chain[-2])
            rule = rule_for_config(parent[1]) if parent else None
            entry = parent if rule is not None and rule.weights_in_sublayer else None
        layer = entry[1] if entry else None
        mode, block_size = quantized.layer_mode(layer)
        names = _weight_names(layer, [ds.shape for _, ds in datasets], mode, block_size)
        if names is None and mode not in (None, "float8"):
            # Packed or integer weights of a layout this reader does not know:
            # counting their bytes as weights would give wrong numbers.
            kind = layer.get("class_name") if isinstance(layer, dict) else None
            for key, ds in datasets:
                name = f"{prefix}/vars/{key}"
                self._once(ds, name)
                self.skipped.append(
                    (name, f"a {mode}-quantized {kind} layer's weight, of a layout not read")
                )
            return
        kernel = names[0] if names and mode is not None else None
        stored = dict(zip(names, (ds for _, ds in datasets), strict=True)) if kernel else {}
        for i, (key, ds) in enumerate(datasets):
            name = f"{prefix}/{names[i] if names else f'vars/{key}'}"
            self._once(ds, name)
            reason = _why_not_countable(ds)
            if reason is None and len(ds.shape) < self.min_rank:
                continue
            if reason is not None:
                self.skipped.append((name, reason))
                continue
            if kernel is not None and names[i] not in (kernel, "bias") and self.min_rank > 0:
                continue  # scales and zero points: counted with --all only
            self._check_size(ds, key)
            if kernel is not None and names[i] == kernel and mode in ("int8", "int4"):
                counted = self._count_quantized(ds, mode, layer, stored, kernel, name)
                if counted is not None:
                    self.counted.append(counted)
                continue
            self.counted.append((name, tuple(int(d) for d in ds.shape), self._count(ds)))

    def _count_quantized(self, ds, mode, layer, stored, kernel, name):
        """`(name, shape, Counts)` of an int8 or int4 kernel: its exact zeros.

        A stored integer that dequantizes to 0 (0, or its group's zero point)
        is a zero, whatever the threshold. An int4 kernel is counted unpacked,
        as its `(rows, columns)`.
        """
        if ds.dtype != np.int8:
            self.skipped.append((name, f"a {mode} kernel stored as {ds.dtype}, not int8"))
            return None
        if mode == "int8":
            return name, tuple(int(d) for d in ds.shape), self._count(ds, threshold=0.0)
        cfg = layer.get("config", {})
        zero = stored.get(f"{kernel}_zero")
        g_idx = stored.get("g_idx")
        try:
            if kernel == "embeddings":
                columns = cfg.get("output_dim")
            else:
                columns = stored[f"{kernel}_scale"].shape[-1]
            if not isinstance(columns, int) or len(ds.shape) != 2:
                raise ValueError("its shape does not fit its layer")
            if ds.shape[1] != (columns + 1) // 2:
                raise ValueError(f"{ds.shape[1]} packed columns do not hold {columns}")
            if zero is not None:
                for extra in (zero, g_idx):
                    if extra.size * extra.dtype.itemsize > self.file_size:
                        raise _Refused(f"{name}'s zero points hold more data than the file")
                zero, g_idx = np.asarray(zero[()]), np.asarray(g_idx[()])
            reader = quantized.Int4Kernel(ds, columns, zero, g_idx, kernel == "embeddings")
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            self.skipped.append((name, f"an int4 kernel that cannot be unpacked ({exc})"))
            return None
        return name, reader.shape, count_blocks(reader.read, reader.shape, 0.0)

    def _check_size(self, ds, key):
        if ds.chunks is not None and ds.id.get_create_plist().get_nfilters():
            chunk = math.prod(ds.chunks) * ds.dtype.itemsize
            if chunk > _MAX_CHUNK_BYTES:
                raise _Refused(
                    f"weight {printable(repr(key))} is stored in compressed chunks of "
                    f"{chunk:,} bytes, more than the {_MAX_CHUNK_BYTES:,} this reader holds"
                )
        nbytes = ds.size * ds.dtype.itemsize
        # Keras stores weights uncompressed, each once: more data than the
        # file holds means a crafted file, which must not make us read it.
        if nbytes > self.budget:
            raise _Refused(
                f"weight {printable(repr(key))} of shape {ds.shape} holds more data than the file"
            )
        self.budget -= nbytes

    def _direct(self, ds):
        """Reads blocks of a contiguous dataset of a stored member straight from the archive.

        h5py reading through a Python file object costs several times a native
        read; a contiguous dataset's bytes sit at one offset, so its blocks are
        read with one `preadv` each into a fresh array. None where that does
        not apply (chunked or compact datasets, bfloat16, no `preadv`).
        """
        window = self.window
        if window is None or not hasattr(os, "preadv") or ds.chunks is not None:
            return None
        offset = ds.id.get_offset()
        nbytes = ds.size * ds.dtype.itemsize
        if offset is None or nbytes == 0 or offset < 0 or offset + nbytes > window.size:
            return None
        shape, dtype = tuple(int(d) for d in ds.shape), ds.dtype
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
        fd = window.raw.fileno()
        # One buffer for every block of this weight (each is counted before the next
        # is read): no fresh pages to fault in per block.
        buffer = np.empty(min(ds.size, BLOCK), dtype)

        def read(index):
            if any(part is Ellipsis for part in index):
                return np.asarray(ds[index])
            start, block = 0, ()
            for axis, part in enumerate(index):
                if isinstance(part, slice):
                    start += part.start * strides[axis]
                    block = (part.stop - part.start,) + shape[axis + 1 :]
                else:
                    start += part * strides[axis]
            block = block if index else shape
            out = buffer[: math.prod(block)].reshape(block)
            where = window.start + offset + start * dtype.itemsize
            if os.preadv(fd, [memoryview(out).cast("B")], where) != out.nbytes:
                raise _Refused("a weight ends past the end of the file")
            return out

        return read

    def _count(self, ds, threshold=None):
        threshold = self.threshold if threshold is None else threshold
        direct = None if _is_bfloat16(ds) else self._direct(ds)
        if direct is not None:
            return count_blocks(direct, ds.shape, threshold)
        if _is_bfloat16(ds):
            import ml_dtypes

            def read(index):
                return np.asarray(ds[index]).view(ml_dtypes.bfloat16).astype(np.float32)
        else:

            def read(index):
                return np.asarray(ds[index])

        return count_blocks(read, ds.shape, threshold)
