"""Magnitude pruning to a sparsity target, on every backend: `prune_low_magnitude`.

A sparsity target is the constraint "at most k non-zeros"; its proximal map is
the projection that keeps the k largest magnitudes (hard thresholding). Keras
applies `variable.constraint` right after every optimizer update, inside the
compiled train step, for any optimizer: that is where the projection runs.

Where the state lives: nowhere new. The projection is a pure function of the
weight and of the optimizer's iteration count, which every backend threads
through its train step (JAX's stateless step maps the optimizer's variables;
a mask variable of the model would be baked into the trace as a constant there)
and which `model.save()` stores with the optimizer. So there is no mask to
keep in sync, no callback to forget, and a model reloaded mid-schedule goes on
exactly where it stopped. On TensorFlow and PyTorch each kernel keeps one
integer between steps, a guess at the threshold that saves the selection when
it still splits off exactly the right number of weights (`_prune_from_guess`):
it changes no result, only the work, and is not saved.
"""

import base64
import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_reg import _keras_private as _private
from keras_reg import rules
from keras_reg._keras_private import flatten_layers
from keras_reg._steps import retrace
from keras_reg._validation import (
    _fail,
    check_built_model,
    check_config_keys,
    check_float,
    check_int,
)
from keras_reg.attach import graph_layers, layer_filter
from keras_reg.patterns import (
    _keys,
    _zeroed,
    block_prune,
    check_block_size,
    check_m_by_n,
    check_pooling,
    m_by_n_prune,
)
from keras_reg.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

# The schedules are re-exported so that the package imports pruning in one line.
__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "freeze_pruning",
    "magnitude_prune",
    "prune_low_magnitude",
    "pruned_weights",
    "strip_pruning",
]

# (shift, bits) of the radix passes over a non-negative float32's 31 bits.
_PASSES = ((21, 10), (10, 11), (0, 10))
# From this many entries on, histograms are counted by bincount (see `_histogram`).
_LARGE = 1 << 16
# From this many entries on, the ties at the threshold are split only when they must be: a
# cumulative sum costs more than a `cond` there.
_TIES_COND = 1 << 12
_MAX_KEY = (1 << 31) - 1


def _histogram(digits, bins, among=None):
    """Counts of each value in `[0, bins)` among the int32 `digits` (1-D), as int32.

    `among`: `None`, or a bool tensor like `digits`: only the entries where it
    is true count. From 65,536 entries on, TensorFlow's and PyTorch's bincount
    are faster than a segment sum (for a million, 1 ms against 10 ms on a
    2-core CPU); below, the segment sum is. JAX's bincount needs a static
    length, which its segment sum takes, and TensorFlow's XLA compiles no
    bincount (`jit_compile=True`, Keras' default on a GPU).
    """
    if (
        int(digits.shape[0]) < _LARGE
        or keras.backend.backend() == "jax"
        or _private.tf_xla_compiling()  # XLA compiles no bincount; its segment sum is fast
    ):
        weights = ops.ones_like(digits) if among is None else ops.cast(among, "int32")
        return ops.segment_sum(weights, digits, num_segments=bins)
    if among is not None:  # the others go to an extra bin, dropped
        digits = ops.where(among, digits, bins)
    return ops.cast(ops.bincount(digits, minlength=bins + 1)[:bins], "int32")


def _kth_key(keys, count):
    """The `count`-th smallest of non-negative int32 `keys` (1-based; `count >= 1`).

    Radix selection from the top bits: three histograms of the keys' digits
    instead of a full sort (TensorFlow's sort of a million floats costs 90 ms
    on a 2-core CPU; this, about 4).
    """
    prefix = ops.zeros((), "int32")
    remaining = count
    for shift, bits in _PASSES:
        digit = ops.bitwise_and(ops.right_shift(keys, shift), (1 << bits) - 1)
        among = None
        if shift + bits < 31:  # only the keys whose higher digits are the prefix's
            high = shift + bits
            among = ops.equal(ops.right_shift(keys, high), ops.right_shift(prefix, high))
        hist = _histogram(digit, 1 << bits, among)
        before = ops.cumsum(hist) - hist
        # The digit of the wanted key: the last one with fewer than `remaining` keys before it.
        chosen = ops.sum(ops.cast(ops.less(before, remaining), "int32")) - 1
        remaining = remaining - ops.take(before, chosen)
        prefix = ops.bitwise_or(prefix, ops.left_shift(chosen, shift))
    return prefix


def _smallest(values, count):
    """Bool mask of the `count` smallest entries of a 1-D float tensor; ties to lower indices."""
    return _smallest_keys(_keys(values), count)


def _flat_keys(x, sparsity):
    """`(keys, count)`: `x`'s magnitudes as flat int32 keys, and the `round(s * n)` to zero."""
    n = math.prod(int(d) for d in x.shape)
    count = ops.cast(ops.round(ops.cast(sparsity, "float32") * float(n)), "int32")
    return _keys(ops.reshape(x, (n,))), count


def _smallest_keys(keys, count):
    """Bool mask of the `count` smallest of non-negative int32 `keys`; ties to lower indices."""
    tau = _kth_key(keys, ops.maximum(count, 1))
    below = ops.less(keys, tau)
    at = ops.equal(keys, tau)
    need = count - ops.sum(ops.cast(below, "int32"))

    def first_ties():  # a cumulative sum over all entries: only where ties must be split
        rank_in_ties = ops.cumsum(ops.cast(at, "int32"))
        return ops.logical_or(below, ops.logical_and(at, ops.less_equal(rank_in_ties, need)))

    if int(keys.shape[0]) >= _TIES_COND:
        split = ops.less(need, ops.sum(ops.cast(at, "int32")))
        chosen = ops.cond(split, first_ties, lambda: ops.logical_or(below, at))
    else:
        chosen = first_ties()
    return ops.logical_and(chosen, ops.greater(count, 0))


def _prune_from_guess(x, sparsity, guess):
    """`magnitude_prune(x, sparsity)`, from a threshold guess kept between steps.

    `guess` is an int32 variable holding a key (a magnitude's bits). When
    exactly `round(s * n)` magnitudes are below it, they are the smallest ones
    and no tie crosses it, so they are exactly what `magnitude_prune` zeroes:
    a comparison and a count instead of a selection. Otherwise the selection
    runs, and the guess becomes half the smallest kept magnitude (but above
    every zeroed one), which the next small update of the weights rarely
    crosses. The result is the same either way; the guess only saves work.
    """
    shape = tuple(int(d) for d in x.shape)
    keys, count = _flat_keys(x, sparsity)
    below = ops.less(keys, guess.value)
    hit = ops.equal(ops.sum(ops.cast(below, "int32")), count)

    def reuse():
        return _zeroed(ops.reshape(below, shape), x)

    def select():
        remove = _smallest_keys(keys, count)
        lowest = ops.max(ops.where(remove, keys, -1)) + 1
        highest = ops.min(ops.where(remove, _MAX_KEY, keys))
        # Halving a float32 subtracts 2**23 from its bits.
        guess.assign(ops.minimum(ops.maximum(highest - (1 << 23), lowest), highest))
        return _zeroed(ops.reshape(remove, shape), x)

    return ops.cond(hit, reuse, select)


def _check_axis(axis, shape, owner):
    rank = len(shape)
    if not -rank <= axis < rank:
        raise ValueError(
            f"The 'axis' argument of {owner} must be in [{-rank}, {rank - 1}] for a weight of "
            f"shape {tuple(shape)}. Received: axis={axis}"
        )
    return axis % rank


def magnitude_prune(x, sparsity, axis=None):
    """Sets the smallest entries (or groups) of `x` to zero: the k-sparse projection.

    Unstructured (`axis=None`): exactly `round(sparsity * n)` of the `n` entries
    with the smallest `|x|` become zero, which is `argmin_y ||y - x||` over the
    tensors with at most `n - round(sparsity * n)` non-zeros. Structured: one
    group per index along `axis` (the groups of `GroupLasso(axis=...)`), and
    exactly `round(sparsity * groups)` groups with the smallest L2 norm become
    zero. Ties go to the lower (flattened) index, so the result is
    deterministic. Entries already zero count among the smallest: a tensor
    with more zeros than the target keeps them.

    Args:
        x: tensor.
        sparsity: float or scalar tensor in [0, 1).
        axis: `None` for unstructured pruning, or the axis whose indices name
            the groups (`-1`: output units of a Dense kernel, filters of a conv
            kernel).

    Returns:
        A tensor of the shape and dtype of `x`.

    References:
        Blumensath & Davies, "Iterative hard thresholding for compressed
        sensing", Applied and Computational Harmonic Analysis 27(3), 2009.
    """
    x = ops.convert_to_tensor(x)
    shape = tuple(int(d) for d in x.shape)
    sparsity = ops.cast(sparsity, "float32")
    if axis is None:
        keys, count = _flat_keys(x, sparsity)
        remove = ops.reshape(_smallest_keys(keys, count), shape)
    else:
        axis = _check_axis(axis, shape, "magnitude_prune")
        others = tuple(a for a in range(len(shape)) if a != axis)
        squares = ops.sum(ops.square(ops.cast(x, "float32")), axis=others)
        count = ops.cast(ops.round(sparsity * float(shape[axis])), "int32")
        kept_shape = [1] * len(shape)
        kept_shape[axis] = shape[axis]
        remove = ops.reshape(_smallest(squares, count), kept_shape)
    return _zeroed(remove, x)


def _as_schedule(schedule, owner):
    if isinstance(schedule, PruningSchedule):
        return schedule
    try:
        sparsity = check_float(schedule, "schedule", owner, low=0.0, high=1.0)
    except ValueError:
        sparsity = 1.0
    if sparsity >= 1.0:
        raise ValueError(
            f"The 'schedule' argument of {owner} must be a pruning schedule "
            "(keras_reg.PolynomialDecay, keras_reg.ConstantSparsity) or a float in [0, 1) for a "
            f"constant target. Received: schedule={schedule!r}"
        )
    return ConstantSparsity(sparsity, begin_step=0, end_step=-1, frequency=1)


def _mask_key(variable):
    """`query/kernel` for `model/mha/query/kernel`: a weight's name within its config owner."""
    return "/".join(variable.path.split("/")[-2:])


def _encode_zeros(zeros):
    packed = np.packbits(np.asarray(zeros, dtype=bool).reshape(-1))
    return {"shape": list(zeros.shape), "zeros": base64.b64encode(packed.tobytes()).decode("ascii")}


def _decode_zeros(entry, owner):
    try:
        shape = tuple(int(d) for d in entry["shape"])
        packed = np.frombuffer(base64.b64decode(entry["zeros"]), dtype=np.uint8)
        size = int(np.prod(shape))
        return np.unpackbits(packed, count=size).astype(bool).reshape(shape)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"The 'frozen' argument of {owner} must map weight names to "
            "{'shape': [...], 'zeros': <base64 of the packed zero mask>} as "
            f"keras_reg.freeze_pruning writes it ({error}). Received an entry: {entry!r}"
        ) from None


@keras.saving.register_keras_serializable(package="keras_reg")
class PruneLowMagnitude(keras.constraints.Constraint):
    """A weight constraint that keeps the largest magnitudes, following a schedule.

    After every optimizer update the weight is projected onto the tensors with
    exactly `round(s * n)` zeros (`magnitude_prune`), where `s =
    schedule.target(step)` is the sparsity of the last pruning step at or
    before `step`, the optimizer's iteration count after this update (the first
    update is step 1). So between pruning steps the sparsity is held exactly,
    never dipping, and from `end_step` on it is exactly the final sparsity.
    With `axis`, whole groups (units, filters) are zeroed: `round(s * groups)`
    of them, smallest L2 norm first.

    TFMOT's patterns (`keras_reg.patterns`): with `sparsity_m_by_n=(m, n)`,
    every `n` consecutive input weights keep their `n - m` largest magnitudes,
    from the first update on (TFMOT's m-by-n ignores the schedule, and so does
    this: pass `schedule=None`); with `block_size=(r, c)`, exactly
    `round(s * blocks)` whole blocks are zeroed, scored by the mean
    (`block_pooling_type="AVG"`) or largest (`"MAX"`) magnitude.

    The projection is applied at every step, not only at pruning steps: this
    is projected gradient descent (iterative hard thresholding) on the k-sparse
    set. Most steps it costs a comparison and a count per kernel: the last
    threshold still splits off exactly the right number of weights, which is
    checked (on TensorFlow and PyTorch; JAX selects at every step). A pruned
    weight gets gradients and may come back if it outgrows a kept one (the
    count of zeros never changes between pruning steps), which TFMOT's fixed
    masks do not allow; it needs no mask variable, so it works
    inside JAX's stateless train step. `keras_reg.freeze_pruning` fixes the
    zero set instead (`frozen`): then every weight that was zero stays zero,
    and the others train freely.

    Pass it as a layer's `kernel_constraint` to write a pruned model, or let
    `keras_reg.prune_low_magnitude` attach it to an existing model. It runs
    inside any Keras optimizer's `apply` (`model.fit`, or a custom loop calling
    `optimizer.apply`), under `Proximal`, `LossScaleOptimizer` and
    `tf.distribute`; called outside an optimizer it raises a `RuntimeError`.

    Args:
        schedule: a `keras_reg.PolynomialDecay` or `keras_reg.ConstantSparsity`,
            or a float in [0, 1) for a constant target from the first update;
            `None` with `sparsity_m_by_n`.
        axis: `None` (default) for unstructured pruning, or the axis whose
            indices name the groups, as in `keras_reg.GroupLasso`.
        sparsity_m_by_n: `None`, or `(m, n)` with `1 <= m < n`: at least `m`
            zeros in every `n` consecutive input weights (TFMOT's 2:4).
        block_size: `None` (or `(1, 1)`), or `(r, c)`: prune whole blocks of
            the kernel seen as a matrix (TFMOT's `block_size`).
        block_pooling_type: `"AVG"` (default) or `"MAX"`: how a block is scored.
        frozen: `None`, or the frozen zero masks that `keras_reg.freeze_pruning`
            writes (weight name -> packed mask); the schedule no longer applies.

    Examples:
        >>> layer = keras.layers.Dense(
        ...     64, kernel_constraint=keras_reg.PruneLowMagnitude(
        ...         keras_reg.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)))
        >>> two_four = keras.layers.Dense(
        ...     64, kernel_constraint=keras_reg.PruneLowMagnitude(None, sparsity_m_by_n=(2, 4)))
    """

    def __init__(
        self,
        schedule,
        axis=None,
        sparsity_m_by_n=None,
        block_size=None,
        block_pooling_type="AVG",
        frozen=None,
    ):
        owner = "PruneLowMagnitude"
        self.sparsity_m_by_n = None
        if sparsity_m_by_n is not None:
            self.sparsity_m_by_n = check_m_by_n(sparsity_m_by_n, owner)
        if self.sparsity_m_by_n is not None and schedule is not None:
            raise ValueError(
                f"The 'schedule' argument of {owner} must be None with sparsity_m_by_n: the m-by-n "
                "pattern fixes the sparsity (m of every n) from the first update on, as TFMOT's "
                f"does. Received: schedule={schedule!r}, sparsity_m_by_n={sparsity_m_by_n!r}"
            )
        self.schedule = None if self.sparsity_m_by_n else _as_schedule(schedule, owner)
        self.axis = None if axis is None else check_int(axis, "axis", owner)
        self.block_pooling_type = check_pooling(block_pooling_type, owner)
        self.block_size = None
        if block_size is not None:
            self.block_size = check_block_size(block_size, owner)
            if self.block_size == (1, 1):  # TFMOT's default: weight by weight
                self.block_size = None
        _check_one_pattern(self.axis, self.sparsity_m_by_n, self.block_size, owner)
        self._frozen = None
        if frozen is not None:
            if not isinstance(frozen, dict) or not frozen:
                _fail("frozen", owner, "None or a non-empty dict (see freeze_pruning)", frozen)
            self._frozen = {key: _decode_zeros(entry, owner) for key, entry in frozen.items()}
        self._guesses = {}  # weight path -> its threshold guess (see `_guess`)
        # Variables, not constants: TensorFlow's graph holds a reference, not the mask. Made
        # here, outside any traced step; JAX reads them as constants (they never change).
        self._frozen_variables = {
            key: keras.Variable(mask, dtype="bool", trainable=False, name="frozen_zeros")
            for key, mask in (self._frozen or {}).items()
        }

    @property
    def frozen(self):
        """Whether the zero set is frozen (`keras_reg.freeze_pruning`)."""
        return self._frozen is not None

    def _frozen_mask(self, w):
        key = _mask_key(w) if isinstance(w, keras.Variable) else None
        masks = self._frozen
        shape = tuple(w.shape)
        if key not in masks and len(masks) == 1 and next(iter(masks.values())).shape == shape:
            key = next(iter(masks))
        if key not in masks or masks[key].shape != shape:
            raise RuntimeError(
                "This frozen keras_reg.PruneLowMagnitude holds zero masks for "
                f"{sorted(masks)} ({[masks[k].shape for k in sorted(masks)]}), none for the "
                f"weight {getattr(w, 'path', '')!r} of shape {shape}. Call "
                "keras_reg.freeze_pruning(model) again to take the frozen zero set from the "
                "kernels' zeros."
            )
        return self._frozen_variables[key]

    def __call__(self, w):
        optimizer = _private.applying_optimizer()
        if optimizer is None:
            raise RuntimeError(
                "keras_reg.PruneLowMagnitude reads the optimizer's step and runs inside a Keras "
                "optimizer's apply() (model.fit, or optimizer.apply in a custom loop); it was "
                f"called outside one, on a weight of shape {tuple(w.shape)}."
            )
        value = w.value if isinstance(w, keras.Variable) else w
        if self._frozen is not None:
            return _zeroed(self._frozen_mask(w).value, value)
        if self.sparsity_m_by_n is not None:
            return m_by_n_prune(value, self.sparsity_m_by_n)
        if self.axis is not None:
            _check_axis(self.axis, tuple(w.shape), "PruneLowMagnitude")
        target = self.schedule.target(optimizer.iterations + 1)
        if self.block_size is not None:
            return block_prune(value, target, self.block_size, self.block_pooling_type)
        guess = self._guess(w) if self.axis is None else None
        if guess is not None:
            return _prune_from_guess(value, target, guess)
        return magnitude_prune(value, target, self.axis)

    def _guess(self, w):
        """`w`'s threshold guess, an int32 variable made on first use, or None where none is kept.

        Only work is saved by it (`_prune_from_guess`), so it is not saved with
        the model. None on JAX (its compiled step carries no variable a
        constraint makes) and under `tf.distribute`.
        """
        if (
            not isinstance(w, keras.Variable)
            or keras.backend.backend() == "jax"
            or _private.under_tf_distribute()
        ):
            return None
        if w.path not in self._guesses:
            try:
                with _private.variables_created_eagerly():
                    self._guesses[w.path] = keras.Variable(
                        np.int32(-1), dtype="int32", trainable=False, name="pruning_guess"
                    )
            except (ValueError, RuntimeError):  # e.g. inside a StatelessScope
                self._guesses[w.path] = None
        return self._guesses[w.path]

    def frozen_copy(self, zeros):
        """A frozen copy of this constraint: `zeros` maps weight names to their zero masks."""
        config = self.get_config()
        config["frozen"] = {key: _encode_zeros(mask) for key, mask in zeros.items()}
        return type(self).from_config(config)

    def get_config(self):
        schedule = self.schedule
        return {
            "schedule": None if schedule is None else keras.saving.serialize_keras_object(schedule),
            "axis": self.axis,
            "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
            "block_size": None if self.block_size is None else list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "frozen": None
            if self._frozen is None
            else {key: _encode_zeros(mask) for key, mask in self._frozen.items()},
        }

    @classmethod
    def from_config(cls, config):
        keys = ("schedule", "axis", "sparsity_m_by_n", "block_size", "block_pooling_type", "frozen")
        check_config_keys(config, keys, "PruneLowMagnitude")
        config = dict(config)
        schedule = config.pop("schedule")
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, **config)


def _check_one_pattern(axis, m_by_n, block_size, owner):
    """Refuses two sparsity patterns at once (TFMOT silently lets m-by-n win)."""
    given = [
        (name, value)
        for name, value in (("axis", axis), ("sparsity_m_by_n", m_by_n), ("block_size", block_size))
        if value is not None
    ]
    if len(given) > 1:
        (first, a), (second, b) = given[:2]
        raise ValueError(
            f"The '{second}' argument of {owner} cannot be combined with '{first}': each sets "
            f"the pattern of the zeros (axis: whole units or filters; sparsity_m_by_n: m of "
            f"every n input weights; block_size: whole blocks). Pass one. Received: "
            f"{first}={a!r}, {second}={b!r}"
        )


def _kernels(layer, pattern=None):
    """`(variable, slot, why_not)` for each prunable kernel of `layer` (its own).

    `why_not` is `None` for a kernel that can be pruned, else why it cannot. A
    frozen kernel (`trainable=False`) is left out: no update ever changes it.
    `pattern` names the m-by-n or block pattern asked for, if any: a kernel
    without an input axis (the layer's rule says) cannot follow it.
    """
    if isinstance(layer, keras.Model):
        return []
    rule = rules.rule_for(layer)
    found = []
    for variable in _private.own_variables(layer):
        name = rules.weight_name(variable)
        if name not in rule.prunable_names(layer):
            continue
        slot = rule.constraint_slot(layer, name)
        if getattr(layer, "lora_enabled", False) and name in ("kernel", "embeddings"):
            why = (
                "LoRA is enabled on it (enable_lora): its kernel is frozen and the LoRA "
                "factors are added to it, so a pruned kernel would not be sparse. Prune "
                "before enable_lora (and strip_pruning before enabling LoRA on a pruned "
                "layer), or merge the LoRA factors into the kernel first"
            )
        elif not variable.trainable:
            continue
        elif slot is None:
            why = (
                f"layer class {type(layer).__name__} has no constraint slot for it, no "
                f"`{name}_constraint` attribute that its config saves: add one, or register "
                "a rule that names one with keras_reg.register_layer_rule"
            )
        elif pattern and (len(variable.shape) < 2 or rule.input_axis(layer, name) is None):
            why = (
                f"{pattern} needs a kernel laid out (..., inputs, outputs), and this "
                f"{type(layer).__name__} kernel of shape {tuple(variable.shape)} is not "
                "(TFMOT takes only rank-2 and rank-4 kernels for it)"
            )
        else:
            why = None
        found.append((variable, slot, why))
    return found


def _config_owners(model):
    """`{id(sub-layer): (layer, attribute)}` for the layers whose config holds their
    sub-layers' kernel constraint (`MultiHeadAttention`: one `kernel_constraint` for
    its query, key, value and output projections, rebuilt from it when loaded)."""
    owners = {}
    for layer in flatten_layers(model, include_self=True):
        slot = getattr(rules.rule_for(layer), "sublayer_constraint", None)
        if slot is None or isinstance(layer, keras.Model):
            continue
        attribute = _private.config_attribute(layer, slot)
        for sub in flatten_layers(layer, include_self=False):
            owners[id(sub)] = (layer, attribute)
    return owners


def _has_kernel(layer):
    """Whether `layer` has a kernel of its own (pruned or not, frozen or not)."""
    if isinstance(layer, keras.Model):
        return False
    names = rules.rule_for(layer).prunable_names(layer)
    return any(rules.weight_name(v) in names for v in _private.own_variables(layer))


def _selected_layers(model, select):
    """Every layer of `model` that `select` picks, itself or through a layer holding it."""
    chosen, seen = [], set()
    for top, _ in graph_layers(model):
        whole = select(top)
        for layer in flatten_layers(top, include_self=True):
            if id(layer) in seen or (isinstance(layer, keras.Model) and layer is not top):
                continue
            if whole or select(layer):
                seen.add(id(layer))
                chosen.append(layer)
    return chosen


def _readable_graph(model):
    """The functional graph that runs `model`, or None (a subclassed model has none)."""
    if isinstance(model, keras.Sequential):
        return _private.sequential_graph(model)
    functional = _private.functional_class()
    if isinstance(model, functional) and type(model).call is functional.call:
        return model
    return None


def _units_reaching(graph, tensors):
    """What computes `tensors` of a functional `graph`, back to the first kernels.

    Returns `(layers, inputs)`: the layers with a prunable kernel whose units
    reach `tensors` through no other kernel (through activations, dropout,
    normalization, pooling, joins, reshapes: zeroing a unit there zeroes, or
    makes constant, part of an output), and the positions of the graph's inputs
    reached the same way. Nested models are followed inside. `None` when a
    model on the way has no graph to read (subclassed).
    """
    producers = {}
    for node in _private.nodes_by_depth(graph):
        for index, tensor in enumerate(node.outputs):
            producers[id(tensor)] = (node, index)
    positions = {id(t): i for i, t in enumerate(keras.tree.flatten(graph.inputs))}
    layers, inputs, seen = [], set(), set()
    stack = list(tensors)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in positions:
            inputs.add(positions[id(tensor)])
            continue
        node, index = producers.get(id(tensor), (None, None))
        if node is None or node.operation is None or node.is_input:
            continue
        op = node.operation
        if isinstance(op, keras.Model):
            inner = _readable_graph(op)
            if inner is None:
                return None
            reached = _units_reaching(inner, [keras.tree.flatten(inner.outputs)[index]])
            if reached is None:
                return None
            layers += reached[0]
            stack += [node.input_tensors[i] for i in sorted(reached[1])]
            continue
        if isinstance(op, keras.layers.Layer):
            held = [layer for layer in flatten_layers(op, include_self=True) if _has_kernel(layer)]
            if held:
                layers += held
                continue
        stack += list(node.input_tensors)
    return layers, inputs


def _protected_outputs(model):
    """The output layers that structured pruning with `layers=None` leaves out, or a refusal."""
    found = _output_layers(model)
    if found is None:
        raise ValueError(
            f"prune_low_magnitude cannot tell which layers compute the outputs of model "
            f"{model.name!r}: it (or a model inside it) is a subclassed keras.Model, whose "
            "graph of layers cannot be read. Structured pruning (axis=...) with layers=None "
            "never prunes the output units (a classifier's classes), so it needs to know them: "
            "pass `layers=` with the layers to prune."
        )
    return found


def _output_layers(model):
    """The layers whose units are `model`'s output units (a classifier's last Dense).

    Each model output traced back through the layers without kernels
    (activations, softmax, dropout, normalization, pooling, joins, reshapes)
    to the layers with kernels that compute it, nested models included.
    `None` when that cannot be read (a subclassed model on the way).
    """
    graph = _readable_graph(model)
    if graph is None:
        return None
    reached = _units_reaching(graph, keras.tree.flatten(graph.outputs))
    return None if reached is None else reached[0]


def _resolve_target(schedule_or_sparsity, pruning_schedule, sparsity_m_by_n, owner):
    """The constraint's schedule: the positional one or TFMOT's `pruning_schedule=`."""
    if schedule_or_sparsity is not None and pruning_schedule is not None:
        raise ValueError(
            f"{owner} takes the schedule once: as `schedule_or_sparsity` or as "
            "`pruning_schedule` (TFMOT's name). Received both: "
            f"schedule_or_sparsity={schedule_or_sparsity!r}, pruning_schedule={pruning_schedule!r}"
        )
    schedule = pruning_schedule if schedule_or_sparsity is None else schedule_or_sparsity
    if sparsity_m_by_n is not None:
        if schedule is not None:
            warnings.warn(
                f"{owner}: sparsity_m_by_n={tuple(sparsity_m_by_n)!r} prunes m of every n input "
                "weights from the first update on, and the schedule "
                f"{schedule!r} is not used (TFMOT ignores it too). Leave it out to silence this "
                "warning.",
                stacklevel=3,
            )
        return None
    if schedule is None:
        raise ValueError(
            f"{owner} needs a sparsity target: a schedule (keras_reg.PolynomialDecay, "
            "keras_reg.ConstantSparsity), positional or as pruning_schedule=, a float in [0, 1) "
            "for a constant target, or sparsity_m_by_n=(m, n). TFMOT's default, "
            "ConstantSparsity(0.5, begin_step=0), is not assumed: pass it."
        )
    return _as_schedule(schedule, owner)


def _pattern_name(constraint):
    if constraint.sparsity_m_by_n is not None:
        return f"sparsity_m_by_n={constraint.sparsity_m_by_n}"
    if constraint.block_size is not None:
        return f"block_size={constraint.block_size}"
    return None


def _prune_unbuilt_layer(layer, constraint, owner):
    """Sets `constraint` in the slots that `layer`'s build will give its kernels."""
    pattern = _pattern_name(constraint)
    attached = []
    for inner in flatten_layers(layer, include_self=True):
        rule = rules.rule_for(inner)
        slot = getattr(rule, "sublayer_constraint", None)
        if slot is not None:
            if pattern:
                raise ValueError(
                    f"{owner} cannot prune layer {inner.name!r} with {pattern}: its kernels "
                    "are not laid out (..., inputs, outputs) (TFMOT refuses them too)."
                )
            attached.append((inner, _private.config_attribute(inner, slot)))
            continue
        if rule.weights_in_sublayer:
            continue  # an RNN layer: the slots are its cell's
        for name in rule.prunable_names(inner):
            slot = rule.constraint_slot(inner, name)
            if slot is None:
                continue
            if pattern and rule.input_axis(inner, name) is None:
                raise ValueError(
                    f"{owner} cannot prune the {name!r} of layer {inner.name!r} with {pattern}: "
                    "it is not laid out (..., inputs, outputs)."
                )
            attached.append((inner, slot))
    if not attached:
        raise ValueError(
            f"{owner} found no kernel to prune in layer {layer.name!r} "
            f"({type(layer).__name__}): none of its kernels has a constraint slot (a "
            "`kernel_constraint` attribute that its config saves). Add one, or register a rule "
            "that names it with keras_reg.register_layer_rule."
        )
    for inner, slot in attached:
        current = getattr(inner, slot)
        if current is not None and not isinstance(current, PruneLowMagnitude):
            raise ValueError(
                f"{owner} cannot prune layer {inner.name!r}: it already has the constraint "
                f"{current!r} in {slot}, and a weight has one constraint. Remove it first."
            )
    for inner, slot in attached:
        setattr(inner, slot, constraint)
    return layer


def _choose(candidates, constraint, axis, outputs, owner):
    """`(chosen, skipped, kept_outputs)` over the layers `candidates`."""
    pattern = _pattern_name(constraint)
    chosen, skipped, kept_outputs = [], [], []
    for layer in candidates:
        for variable, slot, why_not in _kernels(layer, pattern):
            if why_not is not None:
                skipped.append(f"{variable.path!r} ({why_not})")
                continue
            current = getattr(layer, slot)
            if current is not None and not isinstance(current, PruneLowMagnitude):
                raise ValueError(
                    f"{owner} cannot prune {variable.path!r}: it already has the "
                    f"constraint {current!r} in {layer.name}.{slot}, and a weight has one "
                    "constraint. Remove it first, or leave this layer out with `layers=`."
                )
            if axis is not None:
                try:
                    units_axis = _check_axis(axis, tuple(variable.shape), owner)
                except ValueError as error:
                    raise ValueError(f"{error} (weight {variable.path!r})") from None
                if units_axis == len(variable.shape) - 1 and any(o is layer for o in outputs):
                    kept_outputs.append(layer.name)
                    continue
            chosen.append((layer, variable, slot))
    return chosen, skipped, kept_outputs


def _config_owner_slots(root, chosen, owner):
    """The config owners (MultiHeadAttention) of the chosen kernels, all-or-none checked."""
    owners = _config_owners(root)
    picked = {}
    for layer, variable, _ in chosen:
        if id(layer) in owners:
            parent, attribute = owners[id(layer)]
            picked.setdefault(id(parent), (parent, attribute, set()))[2].add(id(variable))
    out = []
    for parent, attribute, variables in picked.values():
        kernels = [
            variable
            for sub in flatten_layers(parent, include_self=False)
            for variable, _, why_not in _kernels(sub)
            if why_not is None
        ]
        if {id(v) for v in kernels} != variables:
            raise ValueError(
                f"{owner} cannot prune only some of the kernels of {type(parent).__name__} "
                f"{parent.name!r}: its config keeps one kernel_constraint for all of "
                f"{[v.path for v in kernels]}, so a saved model would lose the others' "
                "pruning. Select the layer itself (all its projections) or none of them."
            )
        out.append((parent, attribute))
    return out


def prune_low_magnitude(
    model,
    schedule_or_sparsity=None,
    layers=None,
    axis=None,
    *,
    pruning_schedule=None,
    sparsity_m_by_n=None,
    block_size=None,
    block_pooling_type="AVG",
):
    """Prunes the kernels of a built model (or of one layer) to a sparsity target, in place.

    Attaches a `keras_reg.PruneLowMagnitude` constraint to every kernel
    (`kernel`, `embeddings`, `depthwise_kernel`, `pointwise_kernel`, the
    `kernel` and `recurrent_kernel` of LSTM, GRU and SimpleRNN cells, and the
    query, key, value and output kernels of `MultiHeadAttention`) of the chosen
    layers, nested models included: after each optimizer update, each such
    weight keeps exactly its `n - round(s * n)` largest magnitudes (or, with
    `axis`, its largest groups by L2 norm), `s` following the schedule.
    No callback is needed. The layers' configs record the constraint, so
    `model.save()` / `keras.saving.load_model` (after `import keras_reg`) keep
    it, and the step lives in the optimizer: a model saved mid-schedule goes
    on where it stopped. A compiled model's train function is reset, so the
    next `fit` traces the constraint in. `keras_reg.strip_pruning` removes it
    for export (and before `layer.enable_lora`, which refuses a constraint).

    TFMOT's arguments are accepted under their names: `pruning_schedule=`
    (the schedule), `sparsity_m_by_n=(2, 4)` (m zeros in every n consecutive
    input weights, from the first update on; a schedule is then not used),
    `block_size=(r, c)` with `block_pooling_type="AVG"` or `"MAX"` (whole
    blocks, `round(s * blocks)` of them). TFMOT's per-layer form works too:
    `prune_low_magnitude(keras.layers.Dense(64), ...)` returns the layer with
    the constraint in its slots, to be used in a model definition (or a list
    of layers, returned as a list).

    What `layers=None` leaves out:

    - with `axis` on the units (`-1`, the last axis of the kernel), the units
      of the layers that compute the model's outputs: a classifier's last
      Dense would otherwise answer only its bias for the pruned classes. They
      are found through the model's graph, from each output back through the
      layers without kernels (activations, softmax, dropout, normalization,
      pooling, joins) to the layers with kernels, nested models included. Name
      such a layer in `layers=` to prune its units anyway. A subclassed model
      has no graph to read, so it is refused: pass `layers=`.
    - kernels it cannot prune, with one warning naming them and why: a custom
      layer's kernel without a constraint slot (`kernel_constraint`; register
      a rule with `keras_reg.register_layer_rule`), a layer with LoRA
      enabled (prune before `enable_lora`, or merge the LoRA factors first),
      and, with `sparsity_m_by_n` or `block_size`, a kernel not laid out
      `(..., inputs, outputs)` (`MultiHeadAttention`'s). Named in `layers=`,
      such a layer is refused with a `ValueError`.
    - frozen kernels (`trainable=False`): no update ever changes them.

    Args:
        model: a built `keras.Model`; or a layer (built or not), or a list of
            layers, for TFMOT's per-layer form.
        schedule_or_sparsity: a `keras_reg.PolynomialDecay` or
            `keras_reg.ConstantSparsity`, or a float in [0, 1) for a constant
            target from the first update.
        layers: `None` (every layer), a list of layer names or layers, or a
            callable `layer -> bool` (TFMOT's `pruning_policy`, in one line).
        axis: `None` for weight-by-weight pruning, or the axis whose indices
            are pruned whole (`-1`: units and filters).
        pruning_schedule: TFMOT's name for `schedule_or_sparsity`.
        sparsity_m_by_n: `(m, n)`, `1 <= m < n`: at least `m` zeros in every
            `n` consecutive input weights (2:4 for NVIDIA's sparse tensor cores).
        block_size: `(r, c)`: prune whole `r x c` blocks of each kernel seen as
            a matrix (`(1, 1)`, TFMOT's default, is weight by weight).
        block_pooling_type: `"AVG"` (default) or `"MAX"`: a block's score.

    Returns:
        The same model (or layer, or list of layers), pruned in place
        (TFMOT's `prune_low_magnitude` returns a new, wrapped one).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int32")
        >>> model = keras.Sequential([
        ...     keras.Input((20,)), keras.layers.Dense(10, name="d"), keras.layers.Dense(2)
        ... ])
        >>> model = keras_reg.prune_low_magnitude(model, 0.9, layers=["d"])  # or a schedule
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> _ = model.fit(x, y, epochs=1, verbose=0)
        >>> int(np.sum(keras.ops.convert_to_numpy(model.get_layer("d").kernel) == 0))  # of 200
        180
        >>> dense = keras_reg.prune_low_magnitude(keras.layers.Dense(8), sparsity_m_by_n=(2, 4))
        >>> dense.kernel_constraint.sparsity_m_by_n
        (2, 4)
    """
    owner = "prune_low_magnitude"
    if sparsity_m_by_n is not None:
        sparsity_m_by_n = check_m_by_n(sparsity_m_by_n, owner)
    schedule = _resolve_target(schedule_or_sparsity, pruning_schedule, sparsity_m_by_n, owner)
    if axis is not None:
        axis = check_int(axis, "axis", owner)
    # Checked here too, so that a mistake names this function rather than the constraint.
    m_by_n = sparsity_m_by_n
    block = None if block_size is None else check_block_size(block_size, owner)
    check_pooling(block_pooling_type, owner)
    _check_one_pattern(axis, m_by_n, None if block == (1, 1) else block, owner)
    constraint = PruneLowMagnitude(
        schedule,
        axis=axis,
        sparsity_m_by_n=sparsity_m_by_n,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
    )
    if isinstance(model, (list, tuple)) and model:
        if not all(isinstance(item, keras.layers.Layer) for item in model):
            _fail("model", owner, "a keras.Model, a layer or a list of layers", model)
        return [_prune_layer(item, constraint, layers, owner) for item in model]
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        return _prune_layer(model, constraint, layers, owner)
    check_built_model(model, owner)
    select = layer_filter(layers, model, "prune_low_magnitude")
    outputs = _protected_outputs(model) if layers is None and axis is not None else []
    chosen, skipped, kept_outputs = _choose(
        _selected_layers(model, select), constraint, axis, outputs, owner
    )
    if skipped and layers is not None:
        raise ValueError(
            f"prune_low_magnitude cannot prune these kernels of the layers chosen with "
            f"layers={layers!r}: {'; '.join(skipped)}. Leave their layers out of `layers=`."
        )
    if skipped:
        warnings.warn(
            f"prune_low_magnitude left out these kernels of model {model.name!r}: "
            f"{'; '.join(skipped)}. The other kernels are pruned; pass `layers=` to choose "
            "the layers and silence this warning.",
            stacklevel=2,
        )
    if not chosen and kept_outputs:
        raise ValueError(
            f"prune_low_magnitude found nothing to prune in model {model.name!r}: its only "
            f"kernels are those of the layers that compute its outputs "
            f"({sorted(set(kept_outputs))}), whose units structured pruning with layers=None "
            "leaves out. Name them in `layers=` to prune their units anyway."
        )
    if not chosen:
        raise ValueError(
            f"prune_low_magnitude found no kernel to prune in model {model.name!r} with "
            f"layers={layers!r}: the filter matches no layer that has a kernel."
        )
    _attach(model, chosen, constraint, owner)
    retrace(model)  # a traced train step does not apply the new constraint
    return model


def _attach(root, chosen, constraint, owner):
    parents = _config_owner_slots(root, chosen, owner)
    for layer, variable, slot in chosen:
        setattr(layer, slot, constraint)
        variable.constraint = constraint
    for parent, attribute in parents:
        setattr(parent, attribute, constraint)


def _prune_layer(layer, constraint, layers, owner):
    """TFMOT's per-layer form: the layer's kernels (or slots, unbuilt) get `constraint`."""
    if layers is not None:
        raise ValueError(
            f"The 'layers' argument of {owner} selects layers of a model; with a layer given "
            f"({layer.name!r}), that layer is the selection. Received: layers={layers!r}"
        )
    if not layer.built:
        return _prune_unbuilt_layer(layer, constraint, owner)
    candidates = flatten_layers(layer, include_self=True)
    chosen, skipped, _ = _choose(candidates, constraint, constraint.axis, [], owner)
    if skipped:
        raise ValueError(
            f"{owner} cannot prune these kernels of layer {layer.name!r}: {'; '.join(skipped)}."
        )
    if not chosen:
        raise ValueError(
            f"{owner} found no kernel to prune in layer {layer.name!r} ({type(layer).__name__})."
        )
    _attach(layer, chosen, constraint, owner)
    return layer


def freeze_pruning(model):
    """Fixes the zero set of every pruned kernel of `model`: what is zero now stays zero.

    TFMOT's masks: after this, each kernel pruned by `prune_low_magnitude`
    keeps exactly its current zeros through further training (the other
    weights train freely, none is re-selected), on every backend. Call it when
    pruning is done, before fine-tuning the pruned model (or anything that
    must keep a fixed zero set, such as quantization). Each constraint is
    replaced by a frozen `PruneLowMagnitude` that holds the zero masks in its
    config, so `model.save()` / `load_model` keep them and training resumed
    in another process keeps the same zeros. `strip_pruning` removes it as
    any pruning constraint. A compiled model's train function is reset.

    Args:
        model: a built `keras.Model` with kernels pruned by `prune_low_magnitude`.

    Returns:
        The same model, its pruning frozen in place.

    Examples:
        >>> model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10, name="d")])
        >>> model = keras_reg.prune_low_magnitude(model, 0.5)
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((8, 20)), np.ones((8, 10)), verbose=0)
        >>> kernel = model.get_layer("d").kernel
        >>> zeros = keras.ops.convert_to_numpy(kernel) == 0
        >>> model = keras_reg.freeze_pruning(model)
        >>> _ = model.fit(np.ones((8, 20)), np.ones((8, 10)), epochs=3, verbose=0)
        >>> bool(np.array_equal(keras.ops.convert_to_numpy(kernel) == 0, zeros))
        True
    """
    owner = "freeze_pruning"
    check_built_model(model, owner)
    owners = _config_owners(model)
    groups = {}
    for layer in flatten_layers(model, include_self=False):
        if isinstance(layer, keras.Model):
            continue
        rule = rules.rule_for(layer)
        for variable in _private.own_variables(layer):
            constraint = getattr(variable, "constraint", None)
            if not isinstance(constraint, PruneLowMagnitude):
                continue
            slot = rule.constraint_slot(layer, rules.weight_name(variable))
            parent = owners.get(id(layer))
            key = id(parent[0]) if parent else (id(layer), slot)
            group = groups.setdefault(key, (parent, constraint, []))
            group[2].append((layer, slot, variable))
    if not groups:
        raise ValueError(
            f"freeze_pruning found no pruned kernel in model {model.name!r}: prune it with "
            "keras_reg.prune_low_magnitude (and train) first."
        )
    dense = []
    for parent, template, entries in groups.values():
        zeros = {}
        for _, _, variable in entries:
            mask = ops.convert_to_numpy(variable) == 0
            if not mask.any():
                dense.append(variable.path)
            zeros[_mask_key(variable)] = mask
        frozen = template.frozen_copy(zeros)
        for layer, slot, variable in entries:
            if slot is not None:
                setattr(layer, slot, frozen)
            variable.constraint = frozen
        if parent is not None:
            setattr(parent[0], parent[1], frozen)
    if dense:
        warnings.warn(
            f"freeze_pruning froze kernels without a single zero, which now stay dense: "
            f"{dense}. Freeze after training with the schedule, once the zeros are there.",
            stacklevel=2,
        )
    retrace(model)
    return model


def pruned_weights(model):
    """The variables of `model` that a `PruneLowMagnitude` constraint prunes, in model order."""
    return [
        v for v in model.weights if isinstance(getattr(v, "constraint", None), PruneLowMagnitude)
    ]


def strip_pruning(model):
    """A copy of `model` without the pruning constraints, zeros kept, for export.

    The copy has the same architecture and weights (so the same zeros) and no
    `PruneLowMagnitude` constraint: it trains as a plain model and loads
    without keras_reg (unless other keras_reg objects are in it). The model
    given is not changed.

    Args:
        model: a built Sequential or Functional `keras.Model` (nested ones
            included).

    Returns:
        A new `keras.Model`.

    Examples:
        >>> model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10, name="d")])
        >>> model = keras_reg.prune_low_magnitude(model, 0.5)
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((8, 20)), np.ones((8, 10)), verbose=0)
        >>> stripped = keras_reg.strip_pruning(model)
        >>> stripped.get_layer("d").kernel_constraint is None  # plain Keras again
        True
        >>> int(np.sum(keras.ops.convert_to_numpy(stripped.get_layer("d").kernel) == 0))  # kept
        100
    """
    check_built_model(model, "strip_pruning")
    try:
        copy = keras.models.clone_model(model, recursive=True)
    except ValueError as error:
        raise ValueError(
            "strip_pruning copies the model with keras.models.clone_model, which takes "
            f"Sequential and Functional models only. Received: model {model.name!r} of type "
            f"{type(model).__name__} ({error})"
        ) from None
    copy.set_weights(model.get_weights())
    for layer in flatten_layers(copy, include_self=False):
        rule = rules.rule_for(layer)
        for variable in [] if isinstance(layer, keras.Model) else _private.own_variables(layer):
            slot = rule.constraint_slot(layer, rules.weight_name(variable))
            if slot and isinstance(getattr(layer, slot, None), PruneLowMagnitude):
                setattr(layer, slot, None)
    for parent, attribute in {id(o[0]): o for o in _config_owners(copy).values()}.values():
        if isinstance(getattr(parent, attribute, None), PruneLowMagnitude):
            setattr(parent, attribute, None)
    for variable in copy.weights:
        if isinstance(getattr(variable, "constraint", None), PruneLowMagnitude):
            variable.constraint = None
    return copy
