"""`Counts`, what every zero counter returns (private; imports neither Keras nor NumPy).

The in-memory counter (`keras_reg._sparsity.count_zeros`) and the file
reader's block counter (`keras_reg._archive.blocks.count_blocks`) return it,
and `keras_reg.report.rows_from_counts` turns it into report rows.
"""

import collections

# `zeros`: elements with |w| <= threshold. `zero_inputs`: all-zero slices
# along axis -2 (input features of a Dense kernel, input channels of a Conv
# kernel); `zero_units`: along the last axis (output units, filters). Both
# `None` for a weight of rank < 2. All Python ints.
Counts = collections.namedtuple("Counts", ["zeros", "zero_inputs", "zero_units"])
