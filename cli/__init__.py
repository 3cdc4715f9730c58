"""The `surgeon` command line (installed as `surgeon.cli`)."""

import os

# Figures are written to files: the command picks matplotlib's file backend (the library never does).
os.environ.setdefault("MPLBACKEND", "Agg")
