"""The `make bench` sections for shrinking and the report command.

Each hook is a section runner like the others, `(cfg, log) -> list of Ratio`.

- `shrink_vs_clone`, `shrunk_vs_direct`: see `benchmarks.shrink`.
- `report_vs_h5py`: `keras-reg report`'s reader on a `.keras` file of 100M
  weights / h5py alone reading the same weights (goal <= 2).
"""

from benchmarks._harness import Ratio


def shrink_vs_clone(cfg, log):
    """shrink(ResNet50) / clone_model(ResNet50), interleaved rounds. Goal <= 3."""
    from benchmarks import shrink

    return shrink.shrink_vs_clone(cfg, log)


def shrunk_vs_direct(cfg, log):
    """Predict latency: shrunk model / the same sizes built directly. Goal <= 1.10."""
    from benchmarks import shrink

    return shrink.shrunk_vs_direct(cfg, log)


def report_vs_h5py(cfg, log):
    """`keras-reg report`'s reader on 100M weights / h5py reading the same datasets. Goal <= 2.

    Both read the same `model.weights.h5` bytes: the report straight from the
    `.keras` archive (the member is stored, read in place), h5py from a copy of
    the member extracted beforehand (not timed), every dataset read whole.
    """
    import os
    import tempfile
    import zipfile

    import h5py

    from benchmarks import sparsity
    from benchmarks._harness import interleave, table
    from keras_reg._archive import count_weights

    millions = cfg.memory_millions
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        sparsity.dense_stack(millions).save(path)
        with zipfile.ZipFile(path) as archive:
            archive.extract("model.weights.h5", folder)
        h5_path = os.path.join(folder, "model.weights.h5")

        def h5py_read():
            def read(name, obj):
                if isinstance(obj, h5py.Dataset) and "optimizer" not in name:
                    obj[()]
                # None: visititems goes on to the next object

            with h5py.File(h5_path, "r") as h5:
                h5.visititems(read)

        times = interleave(
            {"report": lambda: count_weights(path, min_rank=2), "h5py": h5py_read},
            rounds=3 if cfg.quick else 7,
            groups=[("report", "h5py")],
        )
        size = os.path.getsize(path)
    log(
        table(
            (f"{millions}M weights, {size / 2**20:.0f} MiB .keras", "median s"),
            [[name, f"{sorted(t)[len(t) // 2]:.2f}"] for name, t in times.items()],
        )
    )
    return [
        Ratio.from_times(
            "keras-reg report",
            f"report reader / h5py read, {millions}M weights",
            times,
            "report",
            "h5py",
            goal=2.0,
        )
    ]
