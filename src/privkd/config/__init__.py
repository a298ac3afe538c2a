"""privkd's run configuration.

- :mod:`~privkd.config.schema`: the typed sections (frozen dataclasses), the bottom layer;
- :mod:`~privkd.config.parse`: plain data to schema and back, every key and type checked;
- :mod:`~privkd.config.rows`: a run's results rows (methods and variants);
- :mod:`~privkd.config.validation`: the rules across keys, asking the method registry;
- :mod:`~privkd.config.loading`: YAML files, shipped configs and ``--set`` overrides.

Only the schema is imported here: validation and loading sit above the methods they ask
about, and rebuilding a saved network needs nothing but the schema.
"""

from privkd.config.schema import (
    AMIDConfig,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    MTPKDOTConfig,
    PKDOTConfig,
    PointToPointConfig,
    RunConfig,
    StructuralConfig,
    StudentConfig,
    StudyConfig,
    TeacherConfig,
    TrainingConfig,
    VariantConfig,
)

__all__ = [
    "AMIDConfig",
    "DataConfig",
    "EvaluationConfig",
    "MTPKDOTConfig",
    "ModelConfig",
    "PKDOTConfig",
    "PointToPointConfig",
    "RunConfig",
    "StructuralConfig",
    "StudentConfig",
    "StudyConfig",
    "TeacherConfig",
    "TrainingConfig",
    "VariantConfig",
]
