"""`StrengthScheduler`: change penalty strengths during `fit`, without recompiling."""

import keras
import numpy as np

from keras_reg import _keras_private as _private
from keras_reg._steps import retrace
from keras_reg._validation import check_float
from keras_reg.regularizers import _Regularizer

__all__ = ["StrengthScheduler"]


def model_regularizers(model):
    """The distinct keras_reg regularizers of a model: weights' and activity ones."""
    found, seen = [], set()
    layers = _private.flatten_layers(model, include_self=True)
    candidates = [v.regularizer for v in model.weights if getattr(v, "regularizer", None)]
    candidates += [layer.activity_regularizer for layer in layers]
    for reg in candidates:
        if isinstance(reg, _Regularizer) and id(reg) not in seen:
            seen.add(id(reg))
            found.append(reg)
    return found


class _ScaleState(keras.metrics.Metric):
    """The scales as metric state, so that JAX's compiled train step threads them through.

    It computes nothing: no update, no reset (the scale outlives epochs), no entry
    in the logs. Under JAX every variable that is not model, optimizer or metric
    state is traced as a constant (see `JAXTrainer.train_step`); as a metric's state the
    scales are arguments of the compiled train step, so a new value reaches the
    step already compiled.
    """

    def __init__(self, scales):
        super().__init__(name="keras_reg_strength_scales")
        self._scales = list(scales)

    @property
    def variables(self):
        return list(self._scales)

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def _bind_scales_in_jax_step(step, model, scales, metrics_at):
    """`step` reading each scale from the step's metric state (`state[metrics_at]`).

    The train step (its state's metric variables at 3) and the test step that
    `fit` runs on `validation_data` (at 2) both compute the penalties: as metric
    state, the scales are purged from their variables while JAX's loops run.

    Keras maps the metric state onto its variables only while it computes the
    loss; the penalties (computed in the forward pass) and `Proximal` (in the
    optimizer's step) read the scale variables outside that mapping. While the
    step is traced, each scale variable holds the traced value of its state.
    """

    def bound(state, data):
        metrics_values = state[metrics_at]
        position = {id(v): i for i, v in enumerate(model.metrics_variables)}
        saved = [_private.variable_value(v) for v in scales]
        try:
            for v in scales:
                _private.set_variable_value(v, metrics_values[position[id(v)]])
            return step(state, data)
        finally:
            for v, value in zip(scales, saved, strict=True):
                _private.set_variable_value(v, value)

    return bound


class StrengthScheduler(keras.callbacks.Callback):
    """Sets the scale of keras_reg penalties at the start of each epoch.

    Every keras_reg regularizer multiplies its penalty (and its proximal step,
    under `keras_reg.Proximal`) by a scale, 1.0 by default. At each epoch's
    start this callback sets it to `schedule(epoch, scale)`, the signature of
    Keras' `LearningRateScheduler`, and it writes the scale in effect into
    `logs["strength_scale"]` at the epoch's end.

    The scale is a `keras.Variable` read inside the train step, so the change
    takes effect in the train step already compiled, without a retrace. Under
    JAX, which compiles variables that are not model state as constants, the
    callback makes the scales part of the compiled step's metric state for the
    duration of `fit` (the train step is traced once for the whole schedule).
    A value equal to the current scale in float32 (the scale's dtype) sets
    nothing.

    The scale is training state, not configuration: a model saved mid-schedule
    keeps the base strengths in its config (`L1(0.01).get_config() == {"l1":
    0.01}`) and reloads with scale 1.0; run the scheduler again to resume.

    Args:
        schedule: a function `(epoch, scale) -> new scale`; epoch counts from 0.
            It must return a non-negative number that fits in float32 (the
            scale is a float32 variable), or training stops with a `ValueError`
            naming the epoch and the value.
        regularizers: a non-empty list of the keras_reg regularizer instances
            to scale. Defaults to every keras_reg regularizer of the model
            (kernel, bias, activity).
        verbose: 0 (default) or 1; 1 prints the scale at each change.

    Examples:
        >>> model = keras.Sequential([
        ...     keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.01))
        ... ])
        >>> model.compile("sgd", "mse")
        >>> warm_up = keras_reg.StrengthScheduler(lambda epoch, scale: min(1.0, epoch / 2))
        >>> x, y = np.ones((8, 3)), np.ones((8, 1))
        >>> history = model.fit(x, y, epochs=4, verbose=0, callbacks=[warm_up])
        >>> [float(s) for s in history.history["strength_scale"]]  # 0 to full strength
        [0.0, 0.5, 1.0, 1.0]
    """

    def __init__(self, schedule, regularizers=None, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                "The 'schedule' argument of StrengthScheduler must be a callable "
                f"(epoch, scale) -> scale. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.regularizers = _check_regularizers(regularizers)
        self.verbose = _check_verbose(verbose)
        self._targets = []
        self._original_train_step = None
        self._original_test_step = None
        self._state = None

    def on_train_begin(self, logs=None):
        targets = self.regularizers
        if targets is None:
            targets = model_regularizers(self.model)
        if not targets:
            raise ValueError(
                "StrengthScheduler found no keras_reg regularizer in the model "
                f"{self.model.name!r}: nothing to schedule."
            )
        created = [reg for reg in targets if reg._scale is None]
        for reg in created:
            reg.set_scale(1.0)
        self._targets = targets
        if keras.backend.backend() == "jax":
            self._thread_scales_through_jax_state()
        elif created:
            # A train step traced before the scale existed does not read it.
            retrace(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        current = self._targets[0].scale
        value = self.schedule(epoch, current)
        try:
            value = check_float(value, "scale", "StrengthScheduler")
        except ValueError:
            raise ValueError(
                "The schedule of StrengthScheduler must return a non-negative float that fits "
                "in float32 (at most 3.4028235e+38). "
                f"Received: {value!r} at epoch {epoch}"
            ) from None
        # Compared as the variable stores it: 0.1 is not its float32 self as a double.
        stored = np.float32(value)
        changed = [reg for reg in self._targets if np.float32(reg.scale) != stored]
        for reg in changed:
            reg.set_scale(value)
        if changed and self.verbose:
            print(f"\nEpoch {epoch + 1}: StrengthScheduler setting the penalty scale to {value}.")

    def _thread_scales_through_jax_state(self):
        model = self.model
        scales = []
        for reg in self._targets:
            if all(reg._scale is not v for v in scales):
                scales.append(reg._scale)
        self._state = _ScaleState(scales)
        _private.model_metrics(model).append(self._state)
        self._original_train_step = model.train_step
        self._original_test_step = model.test_step
        model.train_step = _bind_scales_in_jax_step(model.train_step, model, scales, 3)
        model.test_step = _bind_scales_in_jax_step(model.test_step, model, scales, 2)
        retrace(model)

    def on_train_end(self, logs=None):
        if self._original_train_step is not None:
            model = self.model
            model.train_step = self._original_train_step
            model.test_step = self._original_test_step
            self._original_train_step = self._original_test_step = None
            metrics = _private.model_metrics(model)
            metrics[:] = [m for m in metrics if m is not self._state]
            self._state = None
            retrace(model)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._targets:
            logs["strength_scale"] = self._targets[0].scale


def _check_regularizers(regularizers):
    if regularizers is None:
        return None
    expected = (
        "The 'regularizers' argument of StrengthScheduler must be None (every keras_reg "
        "regularizer of the model) or a non-empty list of keras_reg regularizers."
    )
    if isinstance(regularizers, keras.regularizers.Regularizer):
        raise ValueError(f"{expected} Received: regularizers={regularizers!r} (wrap it in a list)")
    try:
        regularizers = list(regularizers)
    except TypeError:
        raise ValueError(
            f"{expected} Received: regularizers={regularizers!r} of type "
            f"{type(regularizers).__name__}"
        ) from None
    if not regularizers:
        raise ValueError(f"{expected} Received: regularizers=[]")
    for reg in regularizers:
        if not isinstance(reg, _Regularizer):
            raise ValueError(f"{expected} Received: {reg!r} of type {type(reg).__name__}")
    return regularizers


def _check_verbose(verbose):
    if isinstance(verbose, bool) or (isinstance(verbose, int) and verbose in (0, 1)):
        return int(verbose)
    raise ValueError(
        f"The 'verbose' argument of StrengthScheduler must be 0 or 1. Received: verbose={verbose!r}"
    )
