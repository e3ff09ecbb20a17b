"""The coverage table of the docs, made from the registry: `python -m keras_reg.rules`."""

from keras_reg.rules.base import CONVENTIONAL_KERNELS

__all__ = ["coverage_table"]


def _names(names):
    return ", ".join(f"`{n}`" for n in names) if names else "none"


def coverage_table():
    """Markdown: every `keras.layers` class, its kernels, what pruning and shrink do with it."""
    from keras_reg.rules import BUILTIN, PREPROCESSING

    weighted = [
        "| Keras layer | kernels (`apply_regularizer`) | pruned (`prune_low_magnitude`) "
        "| `shrink` |",
        "|---|---|---|---|",
    ]
    plain = ["| Keras layer | `shrink` |", "|---|---|"]
    preprocessing = []
    for name in sorted(BUILTIN):
        rule = BUILTIN[name]
        if getattr(rule, "reason", None) == PREPROCESSING:
            preprocessing.append(f"`{name}`")
        elif not rule.weighted:
            plain.append(f"| `{name}` | {rule.shrink} |")
        elif rule.note is not None:
            weighted.append(f"| `{name}` | {rule.note} | {rule.note} | {rule.shrink} |")
        elif rule.kernels is None:
            names = _names(CONVENTIONAL_KERNELS)
            weighted.append(f"| `{name}` | {names} | {names} | {rule.shrink} |")
        else:
            kernels, pruned = _names(rule.kernels), _names(rule.prunable_names(None))
            weighted.append(f"| `{name}` | {kernels} | {pruned} | {rule.shrink} |")
    return (
        "\n".join(
            ["Layers with weights:", "", *weighted, "", "Layers without weights:", "", *plain, ""]
            + [
                "Preprocessing layers (no weights to penalize, no channels to remove; kept whole): "
                + ", ".join(preprocessing)
                + "."
            ]
        )
        + "\n"
    )
