"""A finished rm run loaded as a frozen reward model, with the tokenizer and template it was trained with."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import TunesmithError


def load_reward_model(folder: Path, device, named_by: str = "stage.reward_model", trust_remote_code: bool = False):
    """(frozen ValueHeadModel on `device`, ChatTemplate) of the rm run in `folder`; `named_by` is the option
    the user named the folder with, for the error messages. trust_remote_code is the calling run's own
    (config/trust.py), never the rm run's saved one."""
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import tokenizer_from
    from tunesmith.model.value_head import load_scorer
    from tunesmith.run_folder import read_run_config

    rm_config = read_run_config(folder, named_by=named_by, trust_remote_code=trust_remote_code,
                                how="set model.trust_remote_code in this run's own config")
    if rm_config.stage.kind != "rm":
        raise TunesmithError(f"{named_by}: {folder} is a {rm_config.stage.kind} run, not an rm run")
    tokenizer = tokenizer_from(folder)  # saved by the rm run, with its chat template
    model = load_scorer(folder, rm_config.model, getattr(device, "type", str(device))).to(device)
    return model, ChatTemplate(tokenizer, "auto")
