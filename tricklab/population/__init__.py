"""Population training: many small recipes of one architecture trained together as one stacked model.

A layer of its own, above ``diagnose`` and below ``study`` (docs/DESIGN.md): ``engine`` (the population as the
learner of ``tricklab.train.loop``, ``train_population``), ``support`` (which recipe keys a population honours),
``stacked`` (K models as one module), ``stacked_optim`` (per-member optimizer and clipping rules), ``probe``
(per-member statistics for the doctor).
"""

from tricklab.population.engine import MemberObserver, PopulationMember, train_population
from tricklab.population.support import population_key, population_unsupported

__all__ = ["MemberObserver", "PopulationMember", "population_key", "population_unsupported", "train_population"]
