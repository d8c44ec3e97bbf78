"""A signed manifest of a checkpoint's files, so a resume loads only what this user's tunesmith wrote.

DeepSpeed reads its own checkpoint shards with pickle (its loads allow any object): a crafted file there
would run code on resume. So when such a checkpoint is committed, its completion record lists the SHA-256 of
every file in it and an HMAC over that record, keyed by a secret kept in tunesmith's user config folder, never
in a run folder. Before anything is loaded the record's signature and every digest are checked; a folder
someone else made (or changed, or added a file to) is refused. A copied manifest does not help a forger: without
the key the signature cannot be made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.user_dirs import config_dir

KEY_FILE = "checkpoint-signing.key"
_CHUNK = 1 << 20


def signing_key() -> bytes:
    """This user's key, created on first use (readable by the user alone)."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEY_FILE
    if not path.is_file():
        # Written aside and linked into place: two processes creating it at once both end up with the same key.
        draft = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(32))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes()


def file_digests(folder: Path, leave_out: str) -> dict[str, str]:
    """SHA-256 of every file under `folder` (but `leave_out`, the record itself), by relative path."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != leave_out):
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def signed(record: dict, folder: Path, record_name: str) -> dict:
    """`record` with the manifest of `folder` and the signature over both added."""
    record = {**record, "manifest": file_digests(folder, record_name)}
    return {**record, "signature": _signature(record)}


def verify(record: dict, folder: Path, record_name: str) -> None:
    """Refuse `folder` unless `record` is signed with this user's key and every file matches its digest."""
    given = record.get("signature")
    unsigned = {key: value for key, value in record.items() if key != "signature"}
    if not isinstance(given, str) or "manifest" not in record or not hmac.compare_digest(_signature(unsigned), given):
        raise TunesmithError(f"{folder}: its manifest is missing or not signed by this user's tunesmith "
                             f"(key in {config_dir()}), so its pickled DeepSpeed files will not be loaded; resume only "
                             "checkpoints your own runs wrote, or start the run afresh")
    found = file_digests(folder, record_name)
    changed = sorted(set(found) ^ set(record["manifest"]) | {n for n in found if found[n] != record["manifest"].get(n)})
    if changed:
        raise TunesmithError(f"{folder}: {', '.join(changed[:5])} differ from the signed manifest (changed, added or "
                             "missing since the checkpoint was written); it will not be loaded: resume an earlier "
                             "checkpoint or start afresh")


def _signature(record: dict) -> str:
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(signing_key(), payload, hashlib.sha256).hexdigest()
