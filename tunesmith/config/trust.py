"""trust_remote_code is the user's decision, made on the command line or in the config they run.

A run folder's saved config.yaml may come from anywhere (downloaded, shared, crafted); if its
`model.trust_remote_code: true` were obeyed, opening the folder would run the Python code in it. So a saved
config's model group always takes the flag from the caller, and a folder that needs it is refused with a
message saying how to give it.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config.schema import ModelConfig
from tunesmith.errors import TunesmithError


def saved_model_config(model: ModelConfig, source: str | Path, trust_remote_code: bool,
                       how: str = "pass --trust-remote-code") -> ModelConfig:
    """`model`, read from the saved config `source`, with trust_remote_code set by the caller alone."""
    if model.trust_remote_code and not trust_remote_code:
        raise TunesmithError(
            f"{source} says model.trust_remote_code: true, which would run Python code shipped with {model.path}; "
            f"tunesmith does not take that from a saved run: if you trust that code, {how} yourself")
    return model.model_copy(update={"trust_remote_code": trust_remote_code})
