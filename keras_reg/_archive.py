"""Reading the weights out of a `.keras` file without rebuilding the model (private).

A `.keras` file is a zip holding `config.json`, `metadata.json` and
`model.weights.h5`. Rebuilding the model would import (and run) the code of
its custom layers and constraints; this reader never does: it opens the zip
read-only, reads the HDF5 file from memory with h5py, and parses `config.json`
as plain JSON, only to name weights. It imports neither Keras nor a backend.

Names: Keras stores a layer's weights as `<group>/vars/0`, `<group>/vars/1`,
... with the layer's name as an attribute of `vars`. A weight is named the way
Keras builds `weight.path`: the chain of layer names down to its own layer
(starting with the model's name for a Sequential or subclassed model, not for
a functional one), then the weight's name: `conv2d/kernel`,
`sequential/dense/bias`, `encoder/dense_3/kernel`. The weight's name
(`kernel`, `bias`, `embeddings`, `gamma`, ...) is known from `config.json` for
Keras' own Dense, Conv, Conv-transpose, Embedding, BatchNormalization and
LayerNormalization layers; any other weight is named by its stored position:
`my_block/vars/0`. So for models made of those layers the names equal
`weight.path`, and a report of the file matches `sparsity_report(model)`.
"""

import io
import json
import os
import re
import zipfile

import h5py
import numpy as np

WEIGHTS_FILE = "model.weights.h5"

_KERNEL_LAYERS = {
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
}


class ArchiveError(ValueError):
    """A file that is not a readable `.keras` archive; the message is one line."""


def read_weights(path, min_rank=0):
    """The weights stored in a `.keras` file, without rebuilding the model.

    Args:
        path: path to a `.keras` file. It is opened read-only.
        min_rank: skip (and never read) weights of lower rank.

    Returns:
        A list of `(name, numpy array)`, layers in the order of the model's
        config where it is known. Optimizer variables are left out;
        bfloat16 weights come back as float32.

    Raises:
        ArchiveError: the path is missing, is not a `.keras` file or cannot
            be read; the message is one line that starts with the path.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArchiveError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ArchiveError(f"{path}: is a directory, not a .keras file")
    if not path.endswith(".keras"):
        raise ArchiveError(
            f"{path}: not a .keras file (the name must end in .keras; "
            "legacy .h5 files and SavedModel folders are not read)"
        )
    try:
        with zipfile.ZipFile(path, "r") as archive:
            if WEIGHTS_FILE not in archive.namelist():
                raise ArchiveError(f"{path}: no {WEIGHTS_FILE} inside, so not a .keras model file")
            config = _read_config(archive)
            blob = archive.read(WEIGHTS_FILE)
    except ArchiveError:
        raise
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot be read: {_one_line(exc.strerror or exc)}") from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError...: the file is broken
        raise ArchiveError(f"{path}: corrupt or not a .keras file ({_one_line(exc)})") from None
    try:
        with h5py.File(io.BytesIO(blob), "r") as h5:
            return _Walker(config, min_rank, len(blob)).walk(h5)
    except Exception as exc:  # any failure to parse an untrusted file is the file's fault
        raise ArchiveError(
            f"{path}: its {WEIGHTS_FILE} cannot be read ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _one_line(exc):
    return " ".join(str(exc).split())


def _read_config(archive):
    """config.json as plain JSON, or None: it only serves to name weights."""
    try:
        config = json.loads(archive.read("config.json"))
    except Exception:  # missing, broken or too deeply nested: names by position then
        return None
    return config if isinstance(config, dict) else None


def _layer_configs(config):
    """Layer name -> (position in the config, layer config); ambiguous names map to None."""
    found, seen = {}, set()

    def visit(node):
        if isinstance(node, dict):
            inner = node.get("config")
            # A functional model's entry names its layer at the top level too.
            name = node.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
            cls = node.get("class_name")
            if isinstance(cls, str) and "DTypePolicy" not in cls and isinstance(name, str):
                found[name] = None if name in seen else (len(seen), node)
                seen.add(name)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return found


def _weight_names(layer, shapes):
    """The names of a Keras layer's stored weights, or None where unsure."""
    if layer is None:
        return None
    cls, cfg, module = layer.get("class_name"), layer.get("config"), layer.get("module")
    if layer.get("registered_name") is not None or not str(module).startswith("keras"):
        return None  # a custom class; its weights may be anything
    if not isinstance(cfg, dict):
        return None
    if cls in _KERNEL_LAYERS:
        names = ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    elif cls == "Embedding":
        names = ["embeddings"]
    elif cls in ("BatchNormalization", "LayerNormalization"):
        rms = cls == "LayerNormalization" and cfg.get("rms_scaling", False)
        names = ["gamma"] if cfg.get("scale", True) or rms else []
        names += ["beta"] if cfg.get("center", True) and not rms else []
        if cls == "BatchNormalization":
            names += ["moving_mean", "moving_variance"]
    else:
        return None
    # A quantized or otherwise extended layer stores more: fall back to positions.
    if len(names) != len(shapes) or any(
        name in ("kernel", "embeddings") and len(shape) < 2
        for name, shape in zip(names, shapes, strict=True)
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


class _Walker:
    def __init__(self, config, min_rank, file_size):
        self.file_size = file_size
        self.layers = _layer_configs(config) if config else {}
        self.root_class = config.get("class_name") if config else None
        self.min_rank = min_rank
        self.out = []

    def walk(self, h5):
        # Keras builds the layers of a Sequential or subclassed model inside
        # the model's name scope, so their `weight.path` starts with its name;
        # a functional model's layers are built outside it.
        own = h5.get("vars")
        model_name = _name_of(own, "model") if isinstance(own, h5py.Group) else "model"
        prefixed = self.root_class == "Sequential" or "layers" not in h5
        self._visit(h5, [model_name] if prefixed else [], root=True)
        return self.out

    def _children(self, group):
        """Sub-groups, skipping links (which could point outside the archive)."""
        for key in group.keys():
            if isinstance(group.get(key, getlink=True), h5py.HardLink):
                child = group[key]
                if isinstance(child, h5py.Group):
                    yield key, child

    def _visit(self, group, chain, root=False):
        children = dict(self._children(group))
        own = children.pop("vars", None)
        if own is not None:
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
        for _, child, name in sorted(named, key=lambda item: item[0]):
            self._visit(child, chain + [name] if name else chain)

    def _read_vars(self, vars_group, chain):
        datasets = []
        for key in sorted(vars_group.keys(), key=_natural):
            link = vars_group.get(key, getlink=True)
            ds = vars_group[key] if isinstance(link, h5py.HardLink) else None
            # Virtual and external datasets read other files: never follow them.
            if isinstance(ds, h5py.Dataset) and not ds.is_virtual and not ds.external:
                datasets.append((key, ds))
        entry = self.layers.get(chain[-1])
        names = _weight_names(entry[1] if entry else None, [ds.shape for _, ds in datasets])
        prefix = "/".join(chain)
        for i, (key, ds) in enumerate(datasets):
            if len(ds.shape) < self.min_rank:
                continue
            # Keras stores weights uncompressed; more data than the file holds
            # means a crafted file, which must not make us allocate it.
            if ds.size * ds.dtype.itemsize > self.file_size:
                raise ValueError(f"weight {key!r} of shape {ds.shape} is larger than the file")
            value = _as_numbers(ds)
            if value is not None:
                name = names[i] if names else f"vars/{key}"
                self.out.append((f"{prefix}/{name}", value))


def _as_numbers(ds):
    """The dataset as a numeric array (bfloat16 widened to float32), or None."""
    if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16") and ds.dtype.itemsize == 2:
        import ml_dtypes

        return np.asarray(ds[()]).view(ml_dtypes.bfloat16).astype("float32")
    if ds.dtype.kind not in "biuf":
        return None
    return np.asarray(ds[()])
