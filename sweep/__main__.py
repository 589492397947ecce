"""`python -m sweep`: the command line (see `sweep.cli.main`)."""

import os
import sys

# TensorFlow (tensorflow-datasets' reader, when installed) would log to stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sweep.cli.main import main  # noqa: E402 (after the environment is set)

if __name__ == "__main__":
    sys.exit(main())
