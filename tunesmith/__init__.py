"""tunesmith: fine-tune causal language models from one YAML file."""

from tunesmith.third_party_logs import hold_back_misleading_logs

__version__ = "0.1.0"

hold_back_misleading_logs()  # before anything imports peft, which imports bitsandbytes
