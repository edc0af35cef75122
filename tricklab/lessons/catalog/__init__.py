"""The lessons, one module each, in the order of the German lesson's sections (``lessons.registry.NAMES``)."""
