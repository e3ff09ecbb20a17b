"""`python -m keras_reg report MODEL.keras`: the same command as `keras-reg`."""

import sys

from keras_reg.cli import main

if __name__ == "__main__":
    sys.exit(main())
