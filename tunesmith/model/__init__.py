"""Models: loading, training methods (lora / full / freeze), saving."""
