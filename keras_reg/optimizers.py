"""`Proximal`: proximal gradient training, so that L1 reaches exact zeros."""

import warnings

import keras
from keras import ops

from keras_reg import _keras_private as _private
from keras_reg import regularizers as _regs
from keras_reg._autodiff import gradient as _gradient
from keras_reg._validation import check_config_keys

__all__ = ["Proximal"]


def _as_proximal(regularizer):
    """The regularizer if it has a proximal map, Keras' own L1/L2/L1L2 as ours, else None."""
    if regularizer is None:
        return None
    if callable(getattr(regularizer, "prox", None)):
        return regularizer
    # Exact class checks: a subclass of Keras' L1 may compute another penalty.
    kind = type(regularizer)
    if kind is keras.regularizers.L1:
        return _regs.L1(float(regularizer.l1))
    if kind is keras.regularizers.L2:
        return _regs.L2(float(regularizer.l2))
    if kind is keras.regularizers.L1L2:
        return _regs.L1L2(float(regularizer.l1), float(regularizer.l2))
    return None


# --- the step each optimizer family takes, per coordinate ----------------------------
#
# A proximal step must use the step the optimizer took, so that the fixed points of
# "optimizer update, then prox" are the minimizers of loss + penalty. Near a fixed
# point the optimizer's update is -P * g for a diagonal P; the rules return P, read
# from the optimizer's state right after its update. `lr` and `t` are the learning
# rate and the 1-based step count that the update used.


def _slot(opt, name, variable):
    return _private.slot(opt, name, variable)


def _sgd(opt, variable, lr, t):
    # Heavy ball and Nesterov both settle at -lr / (1 - momentum) * g.
    return lr / (1.0 - opt.momentum)


def _adam(opt, variable, lr, t):
    # Keras' update is lr * sqrt(1 - beta_2^t) * m_hat / (sqrt(v) + epsilon), m_hat the
    # bias-corrected mean gradient: the step on the gradient is the factor before m_hat.
    v = _slot(opt, "_velocity_hats" if opt.amsgrad else "_velocities", variable)
    return lr * ops.sqrt(1.0 - ops.power(opt.beta_2, t)) / (ops.sqrt(v) + opt.epsilon)


def _adamax(opt, variable, lr, t):
    return lr / (_slot(opt, "_u", variable) + opt.epsilon)


def _nadam(opt, variable, lr, t):
    v_hat = _slot(opt, "_velocities", variable) / (1.0 - ops.power(opt.beta_2, t))
    return lr / (ops.sqrt(v_hat) + opt.epsilon)


def _rmsprop(opt, variable, lr, t):
    v = _slot(opt, "_velocities", variable)
    if opt.centered:
        v = v - ops.square(_slot(opt, "_average_gradients", variable))
    return lr / ops.sqrt(v + opt.epsilon) / (1.0 - opt.momentum)


def _adagrad(opt, variable, lr, t):
    return lr / ops.sqrt(_slot(opt, "_accumulators", variable) + opt.epsilon)


_STEP_RULES = (
    (keras.optimizers.SGD, _sgd),
    (keras.optimizers.Adam, _adam),  # and AdamW, which only adds decoupled decay
    (keras.optimizers.Adamax, _adamax),
    (keras.optimizers.Nadam, _nadam),
    (keras.optimizers.RMSprop, _rmsprop),
    (keras.optimizers.Adagrad, _adagrad),
)


# The optimizer state each rule reads: checked at build time (see `Proximal.build`).
def _rule_slots(rule, optimizer):
    if rule is _adam:
        return ("_velocity_hats",) if optimizer.amsgrad else ("_velocities",)
    if rule is _rmsprop:
        return ("_velocities", "_average_gradients") if optimizer.centered else ("_velocities",)
    return {_adamax: ("_u",), _nadam: ("_velocities",), _adagrad: ("_accumulators",)}.get(rule, ())


def _step_rule(optimizer):
    for family, rule in _STEP_RULES:
        # A subclass that rewrites update_step may take another step: fall back.
        if isinstance(optimizer, family) and type(optimizer).update_step is family.update_step:
            return rule
    return None


def _scalar_lr(opt, variable, lr, t):
    return lr


@keras.saving.register_keras_serializable(package="keras_reg")
class Proximal(keras.optimizers.Optimizer):
    """Wraps an optimizer so that penalties are handled by their proximal map.

    For every trainable variable whose regularizer has a proximal map (every
    keras_reg regularizer, and Keras' own `L1`, `L2`, `L1L2`), the penalty is no
    longer descended by its (sub)gradient. Instead, after the wrapped
    optimizer's update, the variable is replaced by `prox(variable, step)`.
    Weights whose optimal value is zero become exactly zero, which plain
    gradient descent never achieves. Other variables train as usual. The
    reported loss still includes the penalty (the objective being minimized):
    only its gradient is taken out.

    With plain `SGD(learning_rate=lr)` one step is exactly ISTA,
    `w <- prox(w - lr * grad_loss(w), lr)`, and full-batch training of a linear
    model converges to the lasso / elastic-net solution.

    The step in the proximal map follows the step the optimizer took, per
    coordinate, so that the strength means what it means in the penalty:

    - `SGD`: `lr / (1 - momentum)` (`lr` without momentum).
    - `Adam`, `AdamW`: `lr * sqrt(1 - beta_2^t) / (sqrt(v) + epsilon)`, the factor
      on the bias-corrected mean gradient in Keras' update (`v_hat` with amsgrad).
    - `Nadam`: `lr / (sqrt(v / (1 - beta_2^t)) + epsilon)`.
    - `Adamax`: `lr / (u + epsilon)`.
    - `RMSprop`: `lr / sqrt(v + epsilon) / (1 - momentum)` (`v - mean_grad^2`
      when centered).
    - `Adagrad`: `lr / sqrt(accumulator + epsilon)`.
    - Any other optimizer (Lion, Adadelta, Ftrl, Lamb, Adafactor, Muon, or a
      subclass that rewrites `update_step`): its current learning rate, with a
      warning at build time. Zeros still appear, but the strength is then only
      relative to that optimizer's step size.

    Group penalties take one step per group: the harmonic mean of the
    coordinates' steps (for Adam, the step of the group's mean `sqrt(v)`), so
    that a coordinate without gradient, whose step is about `lr / epsilon`,
    cannot blow up its group's step.

    Refused: an optimizer with `use_ema=True` (an average of weights that
    reached zero is not zero, and its overwrite would undo the sparsity), and
    `SGD` or `RMSprop` with `momentum >= 1` (an infinite step).

    Mixed precision: let `compile()` wrap it (`LossScaleOptimizer(Proximal(...))`);
    wrapping a `LossScaleOptimizer` in `Proximal` is refused. Learning-rate
    schedules, `clipnorm`/`clipvalue`/`global_clipnorm` (on the wrapped
    optimizer; they clip the loss gradient without the penalty's) and
    `gradient_accumulation_steps` (the proximal step happens on update steps
    only) work. Under `tf.distribute`, the prox happens once per step, on the
    all-reduced update.

    The penalty's gradient is taken out of the gradient that reaches `apply`,
    with the backend's autodiff of the same penalty, so it is off for exactly
    the variables that get the proximal step, whatever the order of compile,
    build and tracing. A custom training loop must therefore include the
    penalties (`model.losses`) in its loss, as `Model.compute_loss` does.

    Args:
        optimizer: a `keras.optimizers.Optimizer` instance or an identifier such
            as `"sgd"` or `"adam"`. Read it back as `proximal.optimizer`.
        name: optional name. Defaults to `"proximal"`.

    Examples:
        Four of five inputs are noise: with `Proximal`, their weights become exactly
        zero; the same penalty with plain `SGD` leaves them small but non-zero.

        >>> x = np.random.default_rng(0).normal(size=(256, 5)).astype("float32")
        >>> y = x[:, :1]
        >>> def zeros_after_training(optimizer):
        ...     model = keras.Sequential([
        ...         keras.Input((5,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.1))
        ...     ])
        ...     model.compile(optimizer=optimizer, loss="mse")
        ...     model.fit(x, y, epochs=20, batch_size=64, verbose=0)
        ...     return int(np.sum(keras.ops.convert_to_numpy(model.layers[0].kernel) == 0))
        >>> zeros_after_training(keras_reg.Proximal(keras.optimizers.SGD(0.1)))
        4
        >>> zeros_after_training(keras.optimizers.SGD(0.1))
        0

    References:
        Beck & Teboulle, "A Fast Iterative Shrinkage-Thresholding Algorithm for
        Linear Inverse Problems", SIAM J. Imaging Sciences 2(1), 2009 (ISTA).
        Yun, Lozano & Yang, "Adaptive Proximal Gradient Methods for Structured
        Neural Networks", NeurIPS 2021 (proximal steps in the preconditioner's
        metric).
    """

    def __init__(self, optimizer, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"Proximal takes only `optimizer` and `name`; set {sorted(kwargs)} on the "
                f"wrapped optimizer instead. Received: {kwargs}"
            )
        if isinstance(optimizer, (str, dict)):
            try:
                optimizer = keras.optimizers.get(optimizer)
            except ValueError as error:
                raise ValueError(
                    "The 'optimizer' argument of Proximal must be a keras Optimizer or an "
                    f"identifier such as 'sgd'. Received: optimizer={optimizer!r} ({error})"
                ) from None
        if isinstance(optimizer, Proximal):
            raise ValueError(
                "The 'optimizer' argument of Proximal must not itself be a Proximal: one "
                f"proximal step per update is the whole point. Received: optimizer={optimizer!r}"
            )
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "The 'optimizer' argument of Proximal must not be a LossScaleOptimizer: wrap "
                "the other way, LossScaleOptimizer(Proximal(opt)), which compile() does for "
                f"you under mixed_float16. Received: optimizer={optimizer!r}"
            )
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "The 'optimizer' argument of Proximal must be a keras Optimizer or an "
                f"identifier such as 'sgd'. Received: optimizer={optimizer!r} of type "
                f"{type(optimizer).__name__}"
            )
        _check_inner(optimizer)
        super().__init__(learning_rate=0.0, name=name or "proximal")
        self.inner_optimizer = optimizer
        self._rule = _step_rule(optimizer) or _scalar_lr

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        # A Keras release that renamed the state a rule reads: the learning-rate step.
        if not _private.has_slots(
            self.inner_optimizer, _rule_slots(self._rule, self.inner_optimizer)
        ):
            self._rule = _scalar_lr
        if self._rule is _scalar_lr and any(_as_proximal(v.regularizer) for v in var_list):
            warnings.warn(
                f"keras_reg.Proximal cannot read the per-coordinate step of "
                f"{type(self.inner_optimizer).__name__}; its proximal step is the learning "
                "rate, so penalty strengths are relative to that optimizer's step size.",
                stacklevel=2,
            )
        super().build(var_list)

    @property
    def variables(self):
        return _private.optimizer_variables(self) + self.inner_optimizer.variables

    # `variables` lists the inner optimizer's state too (JAX's stateless_apply maps
    # them), but Keras saves the inner optimizer as a child object already: save
    # only this wrapper's own variables, or the state is stored twice.
    def save_own_variables(self, store):
        for i, variable in enumerate(_private.optimizer_variables(self)):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        own = _private.optimizer_variables(self)
        if len(store.keys()) != len(own):
            raise ValueError(
                f"Proximal expected {len(own)} variables of its own in the saved "
                f"file, found {len(store.keys())}: the file was not saved by this version."
            )
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])

    @property
    def optimizer(self):
        """The wrapped optimizer, as passed to `Proximal(optimizer)`.

        It is stored as `inner_optimizer`, Keras' name for a wrapped optimizer
        (as in `LossScaleOptimizer`) and the name its state has in `.keras`
        files; `optimizer` is the name of the argument and of the config key.
        """
        return self.inner_optimizer

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = _private.optimizer_trainable_variables(self)
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
                self.built = True
        regs = [_as_proximal(getattr(v, "regularizer", None)) for v in trainable_variables]
        grads = [
            grad
            if grad is None or reg is None
            else grad - ops.cast(self._penalty_gradient(reg, variable), grad.dtype)
            for grad, variable, reg in zip(grads, trainable_variables, regs, strict=True)
        ]

        inner = self.inner_optimizer
        lr = inner.learning_rate
        t = inner.iterations + 1
        steps = inner.gradient_accumulation_steps
        updates = None if not steps else ops.equal((_private.raw_iterations(inner) + 1) % steps, 0)
        inner.apply(grads, trainable_variables)

        # The scalars each rule needs, cast once per dtype rather than once per variable.
        scalars = {}
        for grad, variable, reg in zip(grads, trainable_variables, regs, strict=True):
            if grad is None or reg is None:
                continue
            dtype = variable.dtype
            if dtype not in scalars:
                scalars[dtype] = (
                    ops.cast(lr, dtype),
                    ops.cast(t, dtype),
                    None if updates is None else ops.cast(updates, dtype),
                )
            lr_d, t_d, updates_d = scalars[dtype]
            step = self._rule(inner, variable, lr_d, t_d)
            if updates_d is not None:
                step = step * updates_d
            variable.assign(ops.cast(reg.prox(variable.value, step), dtype))

    @staticmethod
    def _penalty_gradient(reg, variable):
        # Every keras_reg regularizer has its gradient in closed form; another one with
        # a proximal map gets the backend's autodiff of the same penalty.
        if isinstance(reg, _regs._Regularizer):
            grad = reg.gradient(variable.value)
        else:
            grad = _gradient(reg, variable.value)
        # Keras scales each replica's extra losses by 1 / replicas (tf.distribute);
        # the gradient to take out of this replica's gradient is scaled alike.
        return _private.scale_loss_for_distribution(grad)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        check_config_keys(config, ("name", "optimizer"), "Proximal")
        if "optimizer" not in config:
            raise ValueError(
                "The config of Proximal must hold the wrapped optimizer under 'optimizer'. "
                f"Received: config={config!r}"
            )
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)


def _check_inner(optimizer):
    """Refuses wrapped optimizers whose settings make the proximal step meaningless."""
    if getattr(optimizer, "use_ema", False):
        # The average of a weight that reached zero is not zero: the EMA overwrite
        # (periodic, and at the end of fit) would replace the sparse weights by
        # dense averages, silently undoing what the proximal steps found.
        raise ValueError(
            "The 'optimizer' argument of Proximal must not use an exponential moving "
            "average of the weights (use_ema=True): the averaged weights are not sparse and "
            "would overwrite the sparse ones. Received: optimizer="
            f"{type(optimizer).__name__}(use_ema=True)"
        )
    momentum = getattr(optimizer, "momentum", None)
    if _step_rule(optimizer) in (_sgd, _rmsprop) and momentum is not None and momentum >= 1:
        # The step the optimizer settles to is lr / (1 - momentum): infinite.
        raise ValueError(
            "The 'optimizer' argument of Proximal must have momentum < 1: its steady step, "
            "learning_rate / (1 - momentum), is the proximal step, and is infinite at "
            f"momentum 1. Received: optimizer={type(optimizer).__name__}(momentum={momentum!r})"
        )
