"""The GGUF conversion cache is keyed by the file's content, and two processes converting at once both succeed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

CONVERT = "from tunesmith.config.schema import ModelConfig; from tunesmith.model.load import resolve_source; " \
          "import sys; print('LOCATION', resolve_source(ModelConfig(path=sys.argv[1])).location)"


def _tiny_gguf(tiny_model_dir, folder: Path) -> Path:
    from transformers import AutoTokenizer

    from tunesmith.data.template import ChatTemplate
    from tunesmith.export.gguf_file import write_gguf

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = ChatTemplate(tokenizer)
    folder.mkdir()
    return write_gguf(tiny_model_dir, folder / "tiny.gguf", "f32", tokenizer, template.source,
                      template.stop_token_ids(), "tiny", progress=False)


def _location(stdout: str) -> str:
    return next(line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith("LOCATION "))


def test_two_processes_converting_the_same_gguf_both_succeed(tiny_model_dir, tmp_path, monkeypatch):
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    gguf = _tiny_gguf(tiny_model_dir, tmp_path / "a")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    both = [subprocess.Popen([sys.executable, "-c", CONVERT, str(gguf)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [process.communicate(timeout=600) for process in both]
    assert [process.returncode for process in both] == [0, 0], [err[-2000:] for _, err in outcomes]
    locations = {_location(out) for out, _ in outcomes}
    assert len(locations) == 1
    converted = Path(locations.pop())
    cache = tmp_path / "cache" / "tunesmith" / "gguf"
    assert converted.parent == cache and [p.name for p in cache.iterdir()] == [converted.name]  # no staging left

    # The same bytes elsewhere reuse the conversion (no second one: it returns at once).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy = tmp_path / "b" / "tiny.gguf"
    copy.parent.mkdir()
    shutil.copy(gguf, copy)
    assert resolve_source(ModelConfig(path=str(copy))).location == str(converted)


def test_the_cache_is_keyed_by_content_not_size_or_time(tmp_path, monkeypatch):
    from tunesmith.model.load import converted_gguf_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    before, stat = converted_gguf_folder(gguf), gguf.stat()
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 1  # replaced in place: the same size and modification time, other content
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert gguf.stat().st_size == stat.st_size and gguf.stat().st_mtime_ns == stat.st_mtime_ns
    assert converted_gguf_folder(gguf) != before
    moved = tmp_path / "elsewhere" / "m.gguf"
    moved.parent.mkdir()
    shutil.copy(gguf, moved)
    assert converted_gguf_folder(moved) == converted_gguf_folder(gguf)
