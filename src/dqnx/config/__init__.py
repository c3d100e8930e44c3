"""Agent configurations: the schema (schema.py), the parsing of TOML and --set values
(parsing.py) and the presets a run's configuration is layered from (presets.py).

Every name is re-exported here, so `from dqnx.config import DQNConfig, build_config` works.
To list every field with its default: ``python -c "import dqnx.config as c; print(c.describe())"``.
"""

from dqnx.config.parsing import (
    ENV_KEYS,
    MAX_SEED,
    coerce,
    coerce_scalar,
    from_dict,
    parse_set,
    read_toml,
    read_toml_wrappers,
    seed_list,
)
from dqnx.config.presets import build_config, preset_id, preset_path, resolve_config
from dqnx.config.schema import (
    CONFIGS,
    VMAPPABLE,
    DQNConfig,
    ImitationConfig,
    LinearConfig,
    PQNConfig,
    RunConfig,
    TabularConfig,
    config_class,
    describe,
    hyperparameters,
)

__all__ = ["CONFIGS", "ENV_KEYS", "MAX_SEED", "VMAPPABLE", "DQNConfig", "ImitationConfig", "LinearConfig", "PQNConfig", "RunConfig", "TabularConfig",
           "build_config", "coerce", "coerce_scalar", "config_class", "describe", "from_dict", "hyperparameters",
           "parse_set", "preset_id", "preset_path", "read_toml", "read_toml_wrappers", "resolve_config", "seed_list"]
