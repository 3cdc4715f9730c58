"""The `surgeon` command line (installed as `surgeon.cli`)."""
