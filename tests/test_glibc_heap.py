"""The glibc heap in CPU training (train/glibc_heap.py): the malloc note, scripts/quickstart.sh exporting its settings,
and free pages handed back between decoder layers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tunesmith.train.glibc_heap import (GLIBC_SETTINGS, LAYERS_PER_RELEASE, _running_libc, free_page_releaser,
                                       malloc_note, release_between_layers)

REPO = Path(__file__).resolve().parents[1]


def test_cpu_training_on_an_older_glibc_without_settings_is_told_every_export():
    note = malloc_note("cpu", environ={}, libc=("glibc", "2.36"))
    assert note is not None and "glibc 2.36" in note
    for key, value in GLIBC_SETTINGS.items():
        assert f"{key}={value}" in note


@pytest.mark.parametrize("device, environ, libc", [
    ("cuda", {}, ("glibc", "2.36")),  # GPU tensors are not glibc's
    ("cpu", {"MALLOC_MMAP_THRESHOLD_": "1048576"}, ("glibc", "2.36")),  # the user chose settings of their own
    ("cpu", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ("glibc", "2.36")),
    ("cpu", {}, ("glibc", "2.38")),  # memalign reuses fitting free blocks
    ("cpu", {}, ("glibc", "2.40")),
    ("cpu", {}, ("", "")),  # musl, macOS
])
def test_no_note_where_it_does_not_apply(device, environ, libc):
    assert malloc_note(device, environ=environ, libc=libc) is None


def test_quickstart_exports_exactly_these_settings():
    script = (REPO / "scripts" / "quickstart.sh").read_text()
    exported = dict(re.findall(r"^export (\w+)=\$\{\1:-([^}]+)\}$", script, flags=re.MULTILINE))
    assert exported == GLIBC_SETTINGS


@pytest.mark.skipif(_running_libc()[0] != "glibc", reason="malloc_trim is glibc's")
def test_the_releaser_hands_the_pages_of_free_heap_blocks_back():
    import torch

    release = free_page_releaser("cpu")
    release()  # what the process had free before: out of the count below
    blocks = [torch.ones(16 * 1024) for _ in range(2000)]  # 64 KiB each: below glibc's mmap threshold, on the heap
    del blocks[::2]  # 1,000 holes between blocks that stay: freed, but their pages still resident
    before = resident_bytes()
    release()
    assert before - resident_bytes() > 32 * 2**20  # of the 62 MiB in holes (their whole pages)
    del blocks


def test_no_releaser_where_glibc_does_not_hold_the_memory():
    assert free_page_releaser("cuda", libc=("glibc", "2.36")) is None
    assert free_page_releaser("cpu", libc=("", "")) is None


def test_release_runs_after_every_sixth_layer_in_training_forward_and_backward_and_changes_nothing_else():
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_decoders import SHAPE, assert_same_training

    torch.manual_seed(0)
    plain = LlamaForCausalLM(LlamaConfig(**{**SHAPE, "num_hidden_layers": 2 * LAYERS_PER_RELEASE})).train()
    model = copy.deepcopy(plain)
    releases = []
    assert release_between_layers(model, lambda: releases.append(1)) == 2
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    assert_same_training(plain, model, ids)
    assert len(releases) == 4  # two layers, each after its forward and after its backward
    with torch.no_grad():  # evaluation, generation: nothing kept, nothing to release
        model(input_ids=ids)
    assert len(releases) == 4


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
