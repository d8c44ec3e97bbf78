"""Data: formats -> records -> template -> tokenized samples -> batches."""
