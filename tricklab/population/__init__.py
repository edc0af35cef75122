"""Population training: many small recipes of one architecture trained together as one stacked model.

A layer of its own, above ``diagnose`` and below ``study`` (docs/DESIGN.md): ``engine`` (the loop,
``train_population``), ``stacked`` (K models as one module), ``stacked_optim`` (per-member optimizer and
clipping rules), ``probe`` (per-member statistics for the doctor).
"""

from tricklab.population.engine import (
    MemberObserver,
    PopulationMember,
    population_key,
    population_unsupported,
    train_population,
)

__all__ = ["MemberObserver", "PopulationMember", "population_key", "population_unsupported", "train_population"]
