"""Distributed training on the field's own engines: torchrun launches, accelerate runs DDP / DeepSpeed / FSDP."""
