"""Checkpoints written to a temporary folder and renamed into place, so every listed one is complete.

A checkpoint holds everything a resumed run needs to continue the same trajectory: the trained weights
(safetensors), optimizer and scheduler state, every RNG state and the loop's position. Nothing here
unpickles arbitrary objects: weights are safetensors and the rest loads with `torch.load(weights_only=True)`.

A DeepSpeed run's optimizer state (and under ZeRO-3 its weights) is split over the processes, so its checkpoints
also hold DeepSpeed's own sharded states (ENGINE_FOLDER, read back by DeepSpeed itself) and one RNG state per
process; they resume with the same number of processes. Their weights are gathered whole, so they load without
DeepSpeed like any other checkpoint's. DeepSpeed unpickles its own states, so those checkpoints carry a signed
manifest of their files (train/manifest.py), checked before DeepSpeed reads anything.

A commit is durable: the files and the folder entries are fsynced before and after the rename, so a crash
right after it cannot leave a listed checkpoint with files the disk never got.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from tunesmith.durable import fsync_folder, fsync_tree
from tunesmith.errors import TunesmithError
from tunesmith.model.save import save_weights
from tunesmith.model.value_head import ValueHeadModel
from tunesmith.run_folder import ADAPTER_WEIGHTS, CHECKPOINT_PREFIX
from tunesmith.train.manifest import signed, verify
from tunesmith.train.rng import get_rng_state, process_rng_state, set_rng_state
from tunesmith.train.token_logps import LogpsModel

STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"
SCALER_FILE = "scaler.pt"  # fp16 loss scale, present only in fp16 runs
ENGINE_FOLDER = "deepspeed"  # DeepSpeed's checkpoint tag: its sharded model and optimizer states


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict,
                    keep: int | None = None, scaler=None, rng_states: list[dict] | None = None) -> Path:
    """Everything needed to resume, under checkpoint-STEP; then only the newest `keep` checkpoints remain.
    `rng_states`: every process's RNG state in rank order (train/rng.py gather_rng_states); default: this one's."""
    staging = _new_staging_folder(run_dir, step)
    save_weights(model, staging)
    torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), staging / SCHEDULER_FILE)
    torch.save({"processes": rng_states or [get_rng_state()]}, staging / RNG_FILE)
    if scaler is not None:
        torch.save(scaler.state_dict(), staging / SCALER_FILE)
    return _publish(run_dir, step, staging, state, keep)


def save_engine_checkpoint(accelerator, run_dir: Path, step: int, engine, scheduler, state: dict,
                           keep: int | None = None) -> Path:
    """save_checkpoint for a DeepSpeed run; every process calls it. Each writes its shard of DeepSpeed's states
    and its own RNG state; rank 0 adds the full weights, the scheduler and the loop's state, and renames the
    folder into place once all have written theirs."""
    from tunesmith.dist.deepspeed import full_state_dict

    staging = _staging_folder(run_dir, step)
    if accelerator.is_main_process:
        _new_staging_folder(run_dir, step)
    accelerator.wait_for_everyone()
    engine.save_checkpoint(str(staging), tag=ENGINE_FOLDER, save_latest=False)
    torch.save(get_rng_state(), staging / _process_rng_file(accelerator.process_index))
    weights = full_state_dict(accelerator, engine)  # a collective under ZeRO-3
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_weights(accelerator.unwrap_model(engine), staging, weights)
        # The schedule steps on our side of the engine (accelerate does not hand it to DeepSpeed), alike everywhere.
        torch.save(scheduler.state_dict(), staging / SCHEDULER_FILE)
        _publish(run_dir, step, staging, state, keep, sign=True)
    accelerator.wait_for_everyone()
    return _final_folder(run_dir, step)


def _final_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{step}"


def _staging_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f".{CHECKPOINT_PREFIX}{step}.tmp"


def _new_staging_folder(run_dir: Path, step: int) -> Path:
    """An empty folder to write checkpoint-STEP into; it is not listed until _publish renames it."""
    staging = _staging_folder(run_dir, step)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(run_dir: Path, step: int, staging: Path, state: dict, keep: int | None, sign: bool = False) -> Path:
    """Mark `staging` complete and rename it to checkpoint-STEP; then only the newest `keep` checkpoints remain."""
    record = {"step": step, **state}
    (staging / STATE_FILE).write_text(json.dumps(signed(record, staging, STATE_FILE) if sign else record, indent=2),
                                      encoding="utf-8")
    fsync_tree(staging)
    final = _final_folder(run_dir, step)
    if final.exists():
        _delete(final)
    staging.rename(final)
    fsync_folder(Path(run_dir))
    if keep:
        for old in list_checkpoints(run_dir)[:-keep]:
            _delete(old)
    return final


def _process_rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def _delete(folder: Path) -> None:
    """Rename out of the listing first, so a kill mid-delete never leaves a listed, half-deleted checkpoint."""
    doomed = folder.with_name(f".{folder.name}.{random.getrandbits(32):08x}.deleting")
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder is only named checkpoint-N once it is complete)."""
    found = [p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*")
             if p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint `train.resume` names: None (start fresh), 'auto' (newest in run_dir, if any) or a path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir) if Path(run_dir).is_dir() else []
        return found[-1] if found else None
    folder = Path(resume)
    if not (folder / STATE_FILE).is_file():
        raise TunesmithError(
            f"train.resume: {folder} is not a complete checkpoint (no {STATE_FILE}); "
            "point it at a checkpoint-N folder or use resume: auto"
        )
    return folder


def load_checkpoint(folder: Path, model, optimizer, scheduler, scaler=None, rank: int = 0) -> dict:
    """Restore weights, optimizer, scheduler and process `rank`'s RNG states from `folder`; returns the loop's
    saved state."""
    folder = Path(folder)
    if (folder / ENGINE_FOLDER).is_dir():
        raise TunesmithError(f"{folder} was written by a DeepSpeed run (its optimizer state is split over the "
                             "processes); resume it with dist.engine=deepspeed and the same number of processes")
    load_weights(model, folder)
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, map_location="cpu", weights_only=True))
    rng = process_rng_state(torch.load(folder / RNG_FILE, map_location="cpu", weights_only=True), rank)
    if rng is not None:
        set_rng_state(rng)
    if scaler is not None and (folder / SCALER_FILE).is_file():
        scaler.load_state_dict(torch.load(folder / SCALER_FILE, map_location="cpu", weights_only=True))
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def load_engine_checkpoint(accelerator, folder: Path, engine, scheduler) -> dict:
    """load_checkpoint for a DeepSpeed run; every process calls it and reads its own shard and RNG state."""
    folder = Path(folder)
    _check_engine_checkpoint(folder, accelerator.num_processes)
    verify(json.loads((folder / STATE_FILE).read_text(encoding="utf-8")), folder, STATE_FILE)  # before any unpickling
    # The engine restores weights and optimizer (fp32 master weights, moments, loss scale) from its shards.
    engine.load_checkpoint(str(folder), tag=ENGINE_FOLDER, load_optimizer_states=True,
                           load_lr_scheduler_states=False)
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, map_location="cpu", weights_only=True))
    rng_file = folder / _process_rng_file(accelerator.process_index)
    set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def _check_engine_checkpoint(folder: Path, processes: int) -> None:
    """A DeepSpeed checkpoint, written by as many processes as this run has (each holds a shard of it)."""
    if not (folder / ENGINE_FOLDER).is_dir():
        raise TunesmithError(f"{folder} was not written by a DeepSpeed run (no {ENGINE_FOLDER}/ folder); resume "
                             "it with the dist.engine it was written with")
    written_by = len(list(folder.glob(_process_rng_file("*"))))
    if written_by != processes:
        raise TunesmithError(f"{folder} was written by {written_by} processes and this run has {processes}; "
                             f"resume it with dist.nproc_per_node x dist.nnodes = {written_by} processes")


def load_weights(model, folder: Path) -> None:
    """Put the checkpoint's weights into `model`: a peft adapter, or the (possibly sharded) full model; for a
    model with a value head (rm), those into its backbone and the head from the file saved beside them."""
    from safetensors.torch import load_file

    if isinstance(model, LogpsModel):  # it saved the model inside it, under that model's own names
        load_weights(model.backbone, folder)
        return
    if isinstance(model, ValueHeadModel):
        # Its save_pretrained wrote the backbone's own files, named as in the backbone, not the wrapper.
        load_weights(model.backbone, folder)
        model.load_head(folder)
        return
    if (folder / ADAPTER_WEIGHTS).is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(folder / ADAPTER_WEIGHTS))
        problems = list(getattr(result, "unexpected_keys", []))
    else:
        loaded: set[str] = set()
        for file in sorted(folder.glob("*.safetensors")):
            weights = load_file(file)
            model.load_state_dict(weights, strict=False)
            loaded.update(weights)
        problems = [name for name, p in model.named_parameters() if p.requires_grad and name not in loaded]
    if problems:
        raise TunesmithError(
            f"checkpoint {folder} does not match the model ({', '.join(problems[:3])} ...); "
            "resume with the same model and method settings the checkpoint was written with"
        )
