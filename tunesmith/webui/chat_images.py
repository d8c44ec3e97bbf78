"""The Chat tab's images: uploads copied into a folder of the browser session's own, and the user turn each
belongs to.

The engine reads only these copies. A path the page hands in is taken only from Gradio's upload folder (where
Gradio puts what a browser uploads), so a crafted request cannot make the server read one of its own files;
the copies live as long as the conversation (Clear or closing the page removes them), not as long as Gradio's
shared cache does.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from tunesmith.data.media import check_image
from tunesmith.errors import TunesmithError


def upload_folder() -> Path:
    """Where Gradio stores uploaded files (its GRADIO_TEMP_DIR, else a `gradio` folder in the temp folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


class ChatImages:
    """One browser session's uploaded images, one list per user message in the conversation."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="tunesmith-chat-"))
        self.turns: list[list[str]] = []

    def keep(self, uploads: list[str], uploaded_to: Path) -> list[str]:
        """Copies in this session's folder of `uploads`, each checked (all before any is copied) to lie in
        `uploaded_to` and to decode."""
        sources = []
        for upload in uploads:
            source = Path(upload).resolve()
            if not source.is_relative_to(uploaded_to) or not source.is_file():
                raise TunesmithError(f"image {Path(upload).name}: not a file uploaded through this page; "
                                     "upload the image again")
            sources.append(Path(check_image(source, f"image {source.name}")))
        kept = []
        for source in sources:
            copy = self.folder / f"{uuid.uuid4().hex}{source.suffix.lower()}"
            shutil.copyfile(source, copy)
            kept.append(str(copy))
        return kept

    def forget_after(self, turns: int) -> None:
        """Keep the images of the first `turns` user messages only (0: a cleared conversation, or the turn that
        failed taken back); the others' copies are removed."""
        for turn in self.turns[turns:]:
            for path in turn:
                Path(path).unlink(missing_ok=True)
        del self.turns[turns:]

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
