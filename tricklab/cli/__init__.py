"""Command-line interface: ``tricklab train | tricks``."""
