"""Prints the coverage table of the layer rules (docs/_generated/layer_rules.md)."""

from keras_reg.rules.table import coverage_table

print(coverage_table(), end="")
