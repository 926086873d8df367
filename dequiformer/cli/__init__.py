"""Command-line interface: ``dequiformer <command>``."""
