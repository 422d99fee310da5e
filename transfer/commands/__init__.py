"""CLI subcommands of the pretraining core."""
