"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--run, or --model [+ --adapter]: what to load for inference, as `tunesmith.infer.loader` takes it."""
    parser.add_argument("--run", help="a run folder: loads what it trained, with its template")
    parser.add_argument("--model", help="model folder, .gguf file, hub id, or pkg:PACKAGE")
    parser.add_argument("--gguf-file", help="GGUF file name inside --model")
    parser.add_argument("--adapter", help="LoRA adapter folder to apply on --model")
    parser.add_argument("--template", help="chat template: auto (the tokenizer's) or a built-in name")
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                        help="hf: transformers on CPU or GPU; vllm: vLLM on a GPU (pip install 'tunesmith[vllm]')")


def engine_from_args(args):
    from tunesmith.infer.loader import load_engine

    return load_engine(args.model, args.adapter, args.run, args.template, args.gguf_file, args.trust_remote_code,
                       args.backend)
