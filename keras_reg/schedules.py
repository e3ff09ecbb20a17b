"""Pruning schedules with TensorFlow Model Optimization's names and step arithmetic."""

import inspect

import keras
from keras import ops

from keras_reg._validation import _fail, check_config_keys, check_float, check_int

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]


def _check_sparsity(value, name, owner):
    try:
        value = check_float(value, name, owner)
    except ValueError:
        _fail(name, owner, "a float in [0, 1)", value)
    if value >= 1.0:
        _fail(name, owner, "a float in [0, 1)", value)
    return value


# Steps are int32 in the schedule's arithmetic (`ops.cast(step, "int32")`, `step - begin_step`,
# the comparisons with `end_step`): a larger step argument would wrap around (2**31 becomes
# -2**31, and the target 0). Every intermediate value stays in int32 when all three fit.
MAX_STEP = 2**31 - 1
_STEP_RANGE = "[0, 2**31 - 1 = 2147483647] (the steps are int32)"


def _check_steps(begin_step, end_step, frequency, owner, *, end_may_be_open):
    begin_step = check_int(begin_step, "begin_step", owner)
    if not 0 <= begin_step <= MAX_STEP:
        _fail("begin_step", owner, f"an integer in {_STEP_RANGE}", begin_step)
    end_step = check_int(end_step, "end_step", owner)
    if end_step > MAX_STEP:
        _fail("end_step", owner, f"an integer <= 2**31 - 1 = {MAX_STEP} (int32)", end_step)
    if end_may_be_open:
        if end_step != -1 and end_step < begin_step:
            _fail("end_step", owner, f"-1 or an integer >= begin_step={begin_step}", end_step)
    elif end_step <= begin_step:
        _fail("end_step", owner, f"an integer > begin_step={begin_step}", end_step)
    frequency = check_int(frequency, "frequency", owner)
    if not 1 <= frequency <= MAX_STEP:
        _fail("frequency", owner, "an integer in [1, 2**31 - 1 = 2147483647] (int32)", frequency)
    return begin_step, end_step, frequency


class PruningSchedule:
    """Base class: when to prune, and to which sparsity, by optimizer step.

    A step is the optimizer's iteration count after an update: the first
    update of training is step 1, as TFMOT's `pruning_step` is in its first
    batch. Pruning steps are TFMOT's, `begin_step <= step <= end_step` (any
    step past `begin_step` when `end_step == -1`) with
    `(step - begin_step) % frequency == 0`, plus `end_step` itself, so that
    the final sparsity is reached even when `end_step - begin_step` is not a
    multiple of `frequency` (TFMOT never reaches it then).

    Subclasses define `sparsity(step)`, the value at a pruning step, as a
    float32 tensor, and `get_config()`.
    """

    begin_step = 0
    end_step = -1
    frequency = 1

    def sparsity(self, step):
        """The schedule's sparsity at `step` (float32), meaningful at pruning steps."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def should_prune(self, step):
        """Whether `step` is a pruning step (a bool tensor)."""
        step = ops.cast(step, "int32")
        begin, end = self.begin_step, self.end_step
        in_range = ops.greater_equal(step, begin)
        if end >= 0:
            in_range = ops.logical_and(in_range, ops.less_equal(step, end))
        turn = ops.equal(ops.mod(step - begin, self.frequency), 0)
        if end >= 0:
            turn = ops.logical_or(turn, ops.equal(step, end))
        return ops.logical_and(in_range, turn)

    def last_pruning_step(self, step):
        """The latest pruning step `<= step` (int32), or -1 when there is none yet.

        Training starts at step 1, so a pruning step 0 never happens.
        """
        step = ops.cast(step, "int32")
        begin, end = self.begin_step, self.end_step
        last = begin + ops.floor_divide(step - begin, self.frequency) * self.frequency
        if end >= 0:
            last = ops.where(ops.greater_equal(step, end), end, last)
        valid = ops.logical_and(ops.greater_equal(step, begin), ops.greater_equal(last, 1))
        return ops.where(valid, last, -1)

    def target(self, step):
        """The sparsity in force after update `step`: the value at the last pruning step.

        Zero before the first pruning step. This is what keras_reg's projection
        enforces after every update, so the sparsity never dips between
        pruning steps.
        """
        last = self.last_pruning_step(step)
        value = self.sparsity(ops.maximum(last, 0))
        return ops.where(ops.greater_equal(last, 0), value, ops.zeros((), "float32"))

    def __call__(self, step):
        """`(should_prune, sparsity)` at `step`, as TFMOT's schedules return them."""
        return self.should_prune(step), self.sparsity(step)

    def get_config(self):
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    @classmethod
    def from_config(cls, config):
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        check_config_keys(config, params, cls.__name__)
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="keras_reg")
class ConstantSparsity(PruningSchedule):
    """Prunes to one sparsity at every pruning step (TFMOT's `ConstantSparsity`).

    Pruning steps are `begin_step, begin_step + frequency, ...` up to
    `end_step` (forever when `end_step == -1`), and `end_step` itself.

    Args:
        target_sparsity: float in [0, 1), the fraction of zeros.
        begin_step: integer in [0, 2**31 - 1], the first pruning step (the
            optimizer's iteration count; the first update is step 1). Steps
            are int32, so every step argument is at most 2**31 - 1.
        end_step: integer in [begin_step, 2**31 - 1], the last pruning step, or -1 (the
            default) to keep pruning to the end of training.
        frequency: integer in [1, 2**31 - 1], steps between pruning steps.
            Defaults to 100.

    Examples:
        >>> schedule = keras_reg.ConstantSparsity(0.8, begin_step=100)
        >>> float(schedule.target(250))
        0.800000011920929
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        owner = "ConstantSparsity"
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity", owner)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, owner, end_may_be_open=True
        )

    def sparsity(self, step):
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_reg")
class PolynomialDecay(PruningSchedule):
    """Sparsity that rises fast, then levels off (TFMOT's `PolynomialDecay`).

    `sparsity(step) = final + (initial - final) * (1 - p)^power`, with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`, in float32
    as TFMOT computes it (Zhu & Gupta's gradual pruning). Pruning steps are
    `begin_step, begin_step + frequency, ...` up to `end_step`, and `end_step`
    itself: from `end_step` on the sparsity is exactly `final_sparsity`.

    Args:
        initial_sparsity: float in [0, 1), the sparsity at `begin_step`.
        final_sparsity: float in [0, 1), the sparsity from `end_step` on.
        begin_step: integer in [0, 2**31 - 1], the first pruning step (the
            optimizer's iteration count; the first update is step 1). Steps
            are int32, so every step argument is at most 2**31 - 1.
        end_step: integer in (begin_step, 2**31 - 1], the step at which `final_sparsity` is
            reached.
        power: positive float, the exponent. Defaults to 3.
        frequency: integer in [1, 2**31 - 1], steps between pruning steps.
            Defaults to 100.

    Examples:
        >>> schedule = keras_reg.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000)
        >>> round(float(schedule.target(500)), 4)
        0.7875

    References:
        Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", ICLR workshop 2018 (arXiv:1710.01878).
    """

    def __init__(
        self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100
    ):
        owner = "PolynomialDecay"
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity", owner)
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity", owner)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, owner, end_may_be_open=False
        )
        power = check_float(power, "power", owner)
        if power == 0.0:
            _fail("power", owner, "a positive float", power)
        self.power = int(power) if float(power).is_integer() else power

    def sparsity(self, step):
        span = self.end_step - self.begin_step
        p = ops.cast(ops.cast(step, "int32") - self.begin_step, "float32") / float(span)
        p = ops.minimum(1.0, ops.maximum(0.0, p))
        delta = ops.convert_to_tensor(self.initial_sparsity - self.final_sparsity, "float32")
        final = ops.convert_to_tensor(self.final_sparsity, "float32")
        return delta * ops.power(1.0 - p, float(self.power)) + final

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
