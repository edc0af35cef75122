"""Command-line interface: ``tricklab train | doctor | tricks | report``."""
