"""Hydra config module (`worldsim.configs`).

Config groups live in sub-folders (`task/`, `data/`, ...); their structured
schemas are the dataclasses in `schema.py`, registered with Hydra's
ConfigStore when this package is imported.
"""

from worldsim.configs.schema import register_schemas

register_schemas()
