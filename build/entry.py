"""Entry point frozen into dist/edge-runner-linux-<arch> (one file) and dist/edge-runner-linux-<arch>.d/edge-runner."""

import sys

from edge_runner.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
