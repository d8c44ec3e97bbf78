"""Inference: one engine interface used by chat, the API, evaluation and the web UI."""
