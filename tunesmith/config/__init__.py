"""Run configuration: the schema and how it is read."""

from tunesmith.config.load import dump_config, load_config, load_saved_config, validate_config
from tunesmith.config.schema import RunConfig

__all__ = ["RunConfig", "dump_config", "load_config", "load_saved_config", "validate_config"]
