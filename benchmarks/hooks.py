"""Figures that other parts of keras_reg will fill in: their slots in `make bench`.

Each hook is a section runner like the others, `(cfg, log) -> list of Ratio`.
Until the code it times exists on this branch it returns its row as pending
(goal printed, no ratio), so that the summary and BENCHMARKS.md always list
every goal of the performance issue.

- `shrink_vs_clone`: `keras_reg.shrink(ResNet50)` / `keras.models.clone_model`
  of the same model (goal <= 3). The shrinking work fills it in.
- `shrunk_vs_direct`: predict latency of the shrunk model / the same
  architecture built directly at the smaller sizes (goal <= 1.10). Likewise.
- `report_vs_h5py`: `keras-reg report` on a `.keras` file of 100M weights /
  h5py alone reading the same weights (goal <= 2). The report command's new
  reader fills it in (see `benchmarks.sparsity.dense_stack` for the model).
"""

from benchmarks._harness import Ratio


def _pending(section, comparison, goal, reason, log):
    log(f"\n{comparison}: pending ({reason})")
    return [Ratio.pending_row(section, comparison, goal, reason)]


def shrink_vs_clone(cfg, log):
    """shrink(ResNet50) / clone_model(ResNet50), interleaved rounds. Goal <= 3."""
    return _pending(
        "shrink",
        "shrink(ResNet50) / clone_model(ResNet50)",
        3.0,
        "keras_reg.shrink is not on this branch yet",
        log,
    )


def shrunk_vs_direct(cfg, log):
    """Predict latency: shrunk model / the same sizes built directly. Goal <= 1.10."""
    return _pending(
        "shrink",
        "predict: shrunk model / same architecture built directly",
        1.10,
        "keras_reg.shrink is not on this branch yet",
        log,
    )


def report_vs_h5py(cfg, log):
    """`keras-reg report` on 100M weights / h5py reading them. Goal <= 2."""
    return _pending(
        "keras-reg report, 100M weights",
        "keras-reg report / h5py read of the same datasets",
        2.0,
        "measured with the chunked reader of the hardening work",
        log,
    )
