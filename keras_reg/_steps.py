"""The one way keras_reg has Keras trace a model's steps again (private).

A traced train step does not see a penalty, constraint or train step added
after it was traced. Inside `fit` (a callback's `on_train_begin`) the train
function is rebuilt at once, since `fit` calls `model.train_function` at every
step; the test and predict functions are dropped, and `evaluate`, `predict` or
`fit`'s validation make them again when they next run.
"""

__all__ = ["retrace"]


def retrace(model):
    """Has the model's next step trace again with what changed since it was traced."""
    model.test_function = model.predict_function = None
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
