"""`RegularizationPath`: what `regularization_path` found, as data, a table and a figure."""

import math

import keras
import numpy as np

from keras_reg import _keras_private as _private
from keras_reg import regularizers as _regs
from keras_reg import rules as _rules

__all__ = ["RegularizationPath"]

# Each penalty's strength, the parameter the path sets (its other parameters keep their ratio).
STRENGTH_KEY = {
    _regs.L1: "l1",
    _regs.L1L2: "l1",
    _regs.ElasticNet: "alpha",
    _regs.GroupLasso: "strength",
    _regs.SparseGroupLasso: "strength",
}


def _scaled_copy(reg, factor, value):
    """A new regularizer like `reg`, its strength `value` and its `l2` (L1L2) times `factor`."""
    config = reg.get_config()
    if "l2" in config:
        config["l2"] = config["l2"] * factor
    config[STRENGTH_KEY[type(reg)]] = value
    return type(reg).from_config(config)


class RegularizationPath:
    """The result of `keras_reg.regularization_path`: one row per strength, strongest first.

    `str(path)` is a table; `path.to_dict()` the same as plain Python values;
    `path.plot(file)` draws it; `path.model(strength)` rebuilds the model
    trained at that strength.

    Attributes:
        strengths: the strengths, strongest first (a list of floats).
        rows: one dict per strength: `strength`; `sparsity` (the share of
            penalized weights exactly zero) and `nonzero` (their count);
            `zero_units` (output units of penalized kernels whose weights are
            all zero); `inputs_dropped` (input features no kept unit reads);
            `params` and `macs`, the model's weights and multiply-accumulates
            per sample after `keras_reg.shrink` with those inputs dropped
            (`plan_shrink(model, drop_inputs=True)`; `None` where the model
            cannot be planned); `objective`, the training loss with the
            penalty over the point's last epoch; `train_score`, `train_se`,
            `val_score`, `val_se`, the scores (mean and standard error over
            the folds with `cv`; `None` where absent).
        score_name: what the scores are (the loss's name, `"loss"`, ...).
        greater_is_better: whether a greater score is better (accuracies).
        max_strength: the top of the grid when it was computed, else None.
        fold_scores: with `cv`, an array (folds, strengths) of held-out scores.
    """

    def __init__(
        self,
        model,
        strengths,
        weights,
        objectives,
        penalized,
        score_name,
        greater_is_better,
        train_scores,
        test_scores,
        validation_scores,
        top,
        top_at,
        epochs,
    ):
        self._source = model
        self._weights = weights
        self._penalized = penalized
        self.strengths = list(strengths)
        self.score_name = score_name
        self.greater_is_better = greater_is_better
        self.max_strength = top
        self._top_at = top_at
        self.epochs = epochs
        cv = test_scores is not None
        self.fold_scores = test_scores[1:] if cv else None
        k = len(train_scores) - 1

        def mean_se(values):
            mean = float(np.mean(values))
            se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
            return mean, se

        sizes = self._sizes()
        self.rows = []
        for p, strength in enumerate(self.strengths):
            row = {"strength": strength, **sizes[p]}
            row["objective"] = None if objectives[p] is None else float(objectives[p])
            if cv:
                row["train_score"], row["train_se"] = mean_se(train_scores[1:, p])
                row["val_score"], row["val_se"] = mean_se(test_scores[1:, p])
            else:
                row["train_score"], row["train_se"] = float(train_scores[0, p]), None
                if validation_scores is not None:
                    row["val_score"], row["val_se"] = float(validation_scores[p]), None
                else:
                    row["val_score"], row["val_se"] = None, None
            self.rows.append(row)
        self._folds = k if cv else 0

    def _sizes(self):
        """Sparsity, zero units and shrunk sizes of each point, read from the model's weights."""
        from keras_reg.shrinking import plan_shrink

        model = self._source
        saved = model.get_weights()
        variables = self._penalized.variables
        out = []
        try:
            for weights in self._weights:
                model.set_weights(weights)
                values = [keras.ops.convert_to_numpy(v) for v in variables]
                size = sum(v.size for v in values)
                nonzero = sum(int(np.count_nonzero(v)) for v in values)
                zero_units = sum(
                    int(np.sum(~np.any(v.reshape(-1, v.shape[-1]) != 0, axis=0)))
                    for v in values
                    if v.ndim >= 2
                )
                row = {
                    "sparsity": 1.0 - nonzero / size if size else 0.0,
                    "nonzero": nonzero,
                    "zero_units": zero_units,
                    "inputs_dropped": None,
                    "params": None,
                    "macs": None,
                }
                try:
                    plan = plan_shrink(model, drop_inputs=True)
                except ValueError:
                    plan = None
                if plan is not None:
                    total = sum(
                        int(np.prod(t.shape[-1:]))
                        for t in keras.tree.flatten(model.inputs)
                        if t.shape[-1] is not None
                    )
                    kept = sum(len(v) for v in plan.inputs_kept.values())
                    row.update(
                        inputs_dropped=total - kept,
                        params=plan.params_after,
                        macs=plan.macs_after,
                    )
                out.append(row)
        finally:
            model.set_weights(saved)
        return out

    # --- the choice ---------------------------------------------------------------------

    def _held_out(self):
        scores = [row["val_score"] for row in self.rows]
        if any(s is None for s in scores):
            raise ValueError(
                "This path has no held-out score to choose a strength by: run "
                "regularization_path with cv= (cross-validation) or validation_data=."
            )
        return np.array(scores, dtype=np.float64)

    @property
    def best(self):
        """The strength with the best held-out score (the mean over folds with `cv`)."""
        scores = self._held_out()
        index = int(np.argmax(scores) if self.greater_is_better else np.argmin(scores))
        return self.strengths[index]

    @property
    def one_se(self):
        """The largest strength whose held-out score is within one standard error of the best.

        glmnet's rule (`lambda.1se`): the sparsest model that cross-validation
        cannot tell from the best. Without `cv` there is no standard error, and
        it is the best strength.
        """
        scores = self._held_out()
        index = int(np.argmax(scores) if self.greater_is_better else np.argmin(scores))
        se = self.rows[index]["val_se"] or 0.0
        if self.greater_is_better:
            within = scores >= scores[index] - se
        else:
            within = scores <= scores[index] + se
        # Strongest first: the first strength within reach is the largest.
        return self.strengths[int(np.flatnonzero(within)[0])]

    # --- the models ---------------------------------------------------------------------

    def _index(self, strength):
        values = np.array(self.strengths)
        if isinstance(strength, (bool, np.bool_)) or not isinstance(
            strength, (int, float, np.integer, np.floating)
        ):
            matches = []
        else:
            matches = np.flatnonzero(np.isclose(values, float(strength), rtol=1e-9, atol=0))
        if len(matches) != 1:
            raise ValueError(
                "The 'strength' argument of RegularizationPath.model must be one of the path's "
                f"strengths (path.strengths, path.best, path.one_se). Received: "
                f"strength={strength!r}"
            )
        return int(matches[0])

    def model(self, strength):
        """The model trained at `strength`, with its penalties at that strength.

        A new model (`keras.models.clone_model` of the one the path trained),
        uncompiled, holding that point's weights; its keras_reg penalties have
        the point's strengths in their config, so it saves and reloads as is.
        `keras_reg.shrink(path.model(s))` gives the smaller model at once.

        Args:
            strength: one of `path.strengths` (e.g. `path.best`, `path.one_se`).

        Returns:
            A `keras.Model`.
        """
        index = self._index(strength)
        source = self._source
        clone = keras.models.clone_model(source)
        clone.set_weights(self._weights[index])
        penalized = self._penalized
        factor = self.strengths[index] / penalized.reference
        copies = {}
        for reg, ratio in zip(penalized.regularizers, penalized.ratios, strict=True):
            if id(reg) not in copies:
                copies[id(reg)] = _scaled_copy(reg, factor, self.strengths[index] * ratio)
        by_position = dict(zip((id(v) for v in clone.weights), source.weights, strict=True))
        for layer in _private.flatten_layers(clone, include_self=False):
            for variable in _private.own_variables(layer):
                original = by_position.get(id(variable))
                reg = getattr(original, "regularizer", None)
                if reg is None or id(reg) not in copies:
                    continue
                new = copies[id(reg)]
                variable.regularizer = new
                slot = _rules.rule_for(layer).regularizer_slot(layer, _rules.weight_name(variable))
                attribute = None if slot is None else _private.regularizer_attribute(layer, slot)
                if attribute is not None:
                    setattr(layer, attribute, new)
        return clone

    # --- data, table, figure ------------------------------------------------------------------

    def to_dict(self):
        """The path as plain Python values: one row per strength, and the choice."""
        try:
            best, one_se = self.best, self.one_se
        except ValueError:
            best = one_se = None
        return {
            "score": self.score_name,
            "greater_is_better": self.greater_is_better,
            "folds": self._folds,
            "epochs_per_strength": self.epochs,
            "max_strength": self.max_strength,
            "best": best,
            "one_se": one_se,
            "rows": [dict(row) for row in self.rows],
        }

    def __repr__(self):
        return (
            f"RegularizationPath({len(self.strengths)} strengths from {self.strengths[0]:.4g} "
            f"to {self.strengths[-1]:.4g}, folds={self._folds})"
        )

    def __str__(self):
        data = self.to_dict()
        best, one_se = data["best"], data["one_se"]

        def fmt(value, se=None):
            if value is None:
                return "-"
            text = f"{value:.4g}"
            return text if se is None else f"{text} ± {se:.2g}"

        def size(value):
            return "?" if value is None else f"{value:,}"

        val_title = f"{'cv' if self._folds else 'val'} {self.score_name}"
        header = (
            "strength",
            "zeros",
            "zero units",
            "inputs dropped",
            f"train {self.score_name}",
            val_title,
            "params",
            "MACs",
            "",
        )
        lines = []
        for row in self.rows:
            mark = []
            if row["strength"] == best:
                mark.append("best")
            if row["strength"] == one_se:
                mark.append("1-SE")
            lines.append(
                (
                    f"{row['strength']:.4g}",
                    f"{row['sparsity']:.1%}",
                    str(row["zero_units"]),
                    "?" if row["inputs_dropped"] is None else str(row["inputs_dropped"]),
                    fmt(row["train_score"], row["train_se"]),
                    fmt(row["val_score"], row["val_se"]),
                    size(row["params"]),
                    size(row["macs"]),
                    " ".join(mark),
                )
            )
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

        def join(line):
            cells = [
                c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        top = ""
        if self.max_strength is not None:
            where = "at zero" if self._top_at == "zero" else "at the initial weights"
            top = f", from max_strength {self.max_strength:.4g} ({where})"
        title = (
            f"Regularization path: {len(self.strengths)} strengths{top}, "
            f"{self.epochs} epoch(s) each"
            + (
                f", {self._folds}-fold cross-validation (mean ± standard error)"
                if self._folds
                else ""
            )
        )
        rule = "-" * len(join(tuple("-" * w for w in widths)))
        out = [title, join(header), rule, *(join(line) for line in lines)]
        if best is not None:
            out.append(f"best: {best:.4g}; one standard error rule: {one_se:.4g}")
        return "\n".join(out)

    def plot(self, path=None, title=None):
        """Draws the held-out score and the sparsity against the strength (log scale).

        The top panel shows the scores (with their standard errors under
        `cv`) and marks `best` and `one_se`, as glmnet's `plot.cv.glmnet` does;
        the bottom one the penalized weights exactly zero.

        Args:
            path: file to write (any format matplotlib knows, by its
                extension); `None` draws without writing.
            title: optional figure title.

        Returns:
            The matplotlib `Figure`. Needs matplotlib (`pip install
            keras_reg[plot]`).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError(
                "RegularizationPath.plot needs matplotlib: pip install keras_reg[plot]"
            ) from None
        s = np.array(self.strengths)
        rows = self.rows
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)

        def series(key):
            return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)

        train = series("train_score")
        val, val_se = series("val_score"), series("val_se")
        top.plot(s, train, "o-", color="tab:gray", ms=3, label=f"train {self.score_name}")
        if np.any(np.isfinite(val)):
            label = f"{'cv' if self._folds else 'val'} {self.score_name}"
            if np.any(np.isfinite(val_se)):
                top.errorbar(
                    s,
                    val,
                    yerr=val_se,
                    fmt="o-",
                    color="tab:red",
                    ms=3,
                    capsize=2,
                    label=label + " ± SE",
                )
            else:
                top.plot(s, val, "o-", color="tab:red", ms=3, label=label)
            for value, name, style in ((self.best, "best", "--"), (self.one_se, "1-SE", ":")):
                top.axvline(value, color="black", ls=style, lw=1, label=f"{name} {value:.3g}")
                bottom.axvline(value, color="black", ls=style, lw=1)
        top.set_ylabel(self.score_name)
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.plot(s, 100 * series("sparsity"), "o-", color="tab:blue", ms=3)
        bottom.set_ylabel("penalized weights\nexactly zero (%)")
        bottom.set_ylim(-3, 103)
        bottom.set_xscale("log")
        bottom.set_xlabel("strength (log scale)")
        bottom.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig
