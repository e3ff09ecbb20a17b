"""`SparsityLogger`: how sparse the model really is, every epoch."""

import importlib.util
import warnings

import keras

from keras_reg import _sparsity
from keras_reg._validation import check_bool, check_float
from keras_reg.report import build_report

__all__ = ["SparsityLogger"]


class SparsityLogger(keras.callbacks.Callback):
    """Writes the fraction of zero weights into the logs at the end of every epoch.

    At each epoch end it counts the tracked weights with `|w| <= threshold` and
    writes `zeros / size` (over all tracked weights together) into
    `logs["sparsity"]`, so `History`, the progress bar, and a `CSVLogger` or
    `TensorBoard` placed *after it* in the callbacks list record it. Put it
    before them: callbacks see the logs in list order.

    Per-weight detail stays out of the logs by default (the progress bar prints
    every key, which is unreadable on a 50-layer model) and goes to the
    callback's own record: `history[path]`, the sparsity of each tracked weight
    per epoch, and `zero_units[path]`, its number of all-zero units (output
    units of a Dense kernel, filters of a Conv kernel: slices along the last
    axis) per epoch, for weights of rank >= 2. With `log_dir` the same numbers
    also go to TensorBoard.

    NaN and inf weights never crash it and never count as zeros (a diverged
    weight shows as dense, not as pruned). The counting runs where the weights
    live, in one compiled call per epoch under TensorFlow and JAX (eager ops
    under PyTorch); only the counts come back to the host. Under
    `tf.distribute` each weight is read once, not once per replica. The numbers
    are those of `keras_reg.sparsity_report(model, threshold, track)`.

    Args:
        threshold: non-negative float: a weight counts as zero when
            `|w| <= threshold`. Defaults to `0.0`, exact zeros only: plain L1
            gives many small weights and no zeros, proximal training gives
            exact zeros.
        per_weight: bool. If `True`, also writes `logs["sparsity/" + w.path]`
            for every tracked weight `w` (into History, CSV files, the progress
            bar). Defaults to `False`.
        track: which weights to count. `"kernels"` (default): every trainable
            weight of rank >= 2 (Dense and Conv kernels, embeddings; not biases
            or normalization scales), and the kernels a layer froze itself: a
            kernel quantized to int8 or int4 by `model.quantize` (counted by
            its stored integers, exactly, as `sparsity_report` says), a kernel
            under LoRA factors. `"regularized"`: every trainable weight
            with a regularizer (`w.regularizer is not None`). A callable: the
            weights `w` of `model.weights` for which `track(w)` is true. A list
            of weight paths (`w.path`, e.g. `"dense/kernel"`): those weights.
            Checked at the start of training: selecting no weight, or naming a
            path the model lacks, raises a `ValueError`.
        log_dir: optional directory. If given, writes the scalars `sparsity`,
            `sparsity/<path>` and `zero_units/<path>` with the TensorBoard
            summary writer, one step per epoch. Needs TensorFlow (whatever the
            Keras backend). Defaults to `None`: no files.

    Attributes:
        history: dict, weight path -> list of that weight's sparsity, one per
            epoch (appended across `fit` calls).
        zero_units: dict, weight path -> list of the number of all-zero
            units (slices along the last axis), one per epoch (weights of
            rank >= 2 only).
        report: the `SparsityReport` of the last epoch, or `None`.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(64, 10)).astype("float32")
        >>> y = x[:, :2] @ np.ones((2, 1), "float32")
        >>> model = keras.Sequential([
        ...     keras.Input((10,)),
        ...     keras.layers.Dense(1, name="d", kernel_regularizer=keras_reg.L1(0.5)),
        ... ], name="m")
        >>> model.compile(keras_reg.Proximal(keras.optimizers.SGD(0.1)), "mse")
        >>> logger = keras_reg.SparsityLogger()
        >>> history = model.fit(x, y, epochs=10, batch_size=16, verbose=0, callbacks=[logger])
        >>> len(history.history["sparsity"])  # one value per epoch
        10
        >>> history.history["sparsity"][-1]  # the 8 noise inputs' weights are exactly zero
        0.8
        >>> logger.zero_units["m/d/kernel"][-1]  # its one unit is not all zero
        0

        `print(logger.report)` prints the last epoch's table.
    """

    def __init__(self, threshold=0.0, per_weight=False, track="kernels", log_dir=None):
        super().__init__()
        self.threshold = check_float(threshold, "threshold", "SparsityLogger")
        self.per_weight = check_bool(per_weight, "per_weight", "SparsityLogger")
        self.track = _sparsity.check_track(track, "SparsityLogger")
        self.log_dir = _sparsity.check_log_dir(log_dir, "SparsityLogger")
        if self.log_dir is not None and importlib.util.find_spec("tensorflow") is None:
            raise ImportError(
                "SparsityLogger(log_dir=...) writes TensorBoard summaries with TensorFlow, "
                "which is not installed. Install tensorflow or leave log_dir=None."
            )
        self.history = {}
        self.zero_units = {}
        self.report = None
        self._variables = None
        self._counter = None
        self._exact = None
        self._writer = None

    @property
    def zero_groups(self):
        """Deprecated name of `zero_units` (version 0.1)."""
        warnings.warn(
            "SparsityLogger.zero_groups is deprecated; use zero_units.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.zero_units

    def _start(self):
        self._variables = _sparsity.select_weights(self.model, self.track, "SparsityLogger")
        _, exact = _sparsity.read_values(self.model, self._variables)
        if self._counter is None or exact != self._exact:
            self._counter = _sparsity.compiled_counter(self.threshold, exact)
            self._exact = exact
        if self.log_dir is not None and self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_begin(self, logs=None):
        self._start()

    def on_epoch_end(self, epoch, logs=None):
        if self._variables is None:
            self._start()
        variables = self._variables
        values, exact = _sparsity.read_values(self.model, variables)
        report = build_report(
            [v.path for v in variables], values, self.threshold, self._counter, exact
        )
        self.report = report
        if logs is not None:
            logs["sparsity"] = report.sparsity
            if self.per_weight:
                for row in report.rows:
                    logs[f"sparsity/{row.path}"] = row.sparsity
        for row in report.rows:
            self.history.setdefault(row.path, []).append(row.sparsity)
            if row.zero_units is not None:
                self.zero_units.setdefault(row.path, []).append(row.zero_units)
        if self._writer is not None:
            self._write_summaries(epoch, report)

    def _write_summaries(self, epoch, report):
        import tensorflow as tf

        # What `tf.summary.scalar` writes, without needing the tensorboard
        # package (TensorFlow 2.21 no longer depends on it).
        meta = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
        )

        def scalar(tag, value):
            tf.summary.write(tag, tf.constant(value, tf.float32), step=epoch, metadata=meta)

        with self._writer.as_default():
            scalar("sparsity", report.sparsity)
            for row in report.rows:
                scalar(f"sparsity/{row.path}", row.sparsity)
                if row.zero_units is not None:
                    scalar(f"zero_units/{row.path}", row.zero_units)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
