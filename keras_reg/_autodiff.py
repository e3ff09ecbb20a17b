"""The gradient of a scalar function of one tensor, on the active backend (private).

Keras has no backend-agnostic autodiff in `keras.ops`; this is the one place
that names the backends. `Proximal` uses it to take the penalty's gradient out
of the gradient Keras computed, with the same autodiff that put it in.
"""

import keras


def gradient(fn, x):
    """Returns d fn(x) / dx for a scalar-valued `fn`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.grad(fn)(x)
    if backend == "torch":
        import torch

        with torch.enable_grad():
            x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x), x)
        return grad
    raise NotImplementedError(f"keras_reg.Proximal does not support the {backend!r} backend.")


def gradients(fn, xs):
    """Returns `[d fn(xs) / dx for x in xs]` for a scalar-valued `fn` of a list of tensors."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(x) for x in xs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = fn(xs)
        return tape.gradient(y, xs)
    if backend == "jax":
        import jax

        return jax.grad(fn)(list(xs))
    if backend == "torch":
        import torch

        with torch.enable_grad():
            xs = [keras.ops.convert_to_tensor(x).detach().requires_grad_(True) for x in xs]
            return list(torch.autograd.grad(fn(xs), xs, allow_unused=True))
    raise NotImplementedError(f"keras_reg does not support the {backend!r} backend.")
