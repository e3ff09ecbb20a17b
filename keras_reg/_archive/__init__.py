"""Counting the zeros of a `.keras` file's weights without Keras (private).

`keras-reg report` reads a saved model through this package: `reader` opens
the archive (untrusted input) and names and walks its HDF5 weights, `blocks`
counts each weight one block at a time, in NumPy. Nothing here imports Keras
or a backend, so the command starts without them.
"""

from keras_reg._archive.reader import ArchiveError, count_weights, one_line, printable

__all__ = ["ArchiveError", "count_weights", "one_line", "printable"]
