"""The web UI: Train / Evaluate / Chat / Export in the browser, built with Gradio (`tunesmith webui`).

Forms are generated from the config schema; training, evaluation and export run as the same `tunesmith`
subprocesses the CLI runs; chat uses the inference engine in-process.
"""
