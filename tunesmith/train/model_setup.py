"""The model a run trains, prepared in one order: loaded in the precision plan's dtype (straight onto the GPU when
one process holds it), kernels swapped, CPU attention that keeps grouped keys and values as they are
(model/cpu_attention.py), gated MLPs set to recompute their activation in backward, decoder layers set to rebuild
their cheap activations there (model/recompute.py), free heap pages handed back between layers on a CPU
(train/glibc_heap.py), the method applied, trainable weights made float32 masters, layers compiled. The training
command and the GPU bench both prepare their models here."""

from __future__ import annotations

from tunesmith.config.schema import RunConfig


def prepare_model(config: RunConfig, accelerator, source=None):
    """The model of `config`, ready to train on the accelerator's device."""
    from tunesmith.model.cpu_attention import use_cpu_attention
    from tunesmith.model.gated_mlp import recompute_mlp_activations
    from tunesmith.model.kernels import apply_kernels, compile_layers
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method, count_parameters
    from tunesmith.model.precision import apply_device_settings, keep_trainable_in_master, training_plan
    from tunesmith.model.recompute import recompute_cheap_activations
    from tunesmith.train.glibc_heap import free_page_releaser, malloc_note, release_between_layers

    device_type = accelerator.device.type
    plan = training_plan(config, device_type)
    apply_device_settings(plan)
    # One process holding the whole model loads it onto its device; DDP / sharding engines place it themselves.
    device = accelerator.device if accelerator.num_processes == 1 and device_type == "cuda" else None
    model = load_model(config.model, device_type, source, plan.load_dtype, device)
    apply_kernels(model, config.train.kernels, device_type)  # before LoRA wraps the linears it swaps around
    if device_type == "cpu":
        use_cpu_attention(model)  # grouped keys and values kept as they are
    recompute_mlp_activations(model)  # the gated MLPs Liger did not replace
    if not config.train.compile:  # the hook is Python that torch.compile would trace into the layers' graphs
        recompute_cheap_activations(model)
    release = free_page_releaser(device_type)
    if release:
        release_between_layers(model, release)
    model = apply_method(model, config.method)
    keep_trainable_in_master(model, plan)
    if config.train.compile:
        compile_layers(model)
    accelerator.print(count_parameters(model))
    accelerator.print(plan.describe())
    note = malloc_note(device_type)
    if note:
        accelerator.print(note)
    return model
