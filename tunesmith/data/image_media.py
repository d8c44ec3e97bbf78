"""What every vision-language family's image side shares (data/vision_processor.py for Qwen2-VL, data/vision_llava.py
for LLaVA): encoding with placeholders expanded, and the processor fingerprint that joins the data cache key.
Its own module so that the family modules import it without importing each other."""

from __future__ import annotations

import hashlib
import json


class ImageMedia:
    """What every family's image side shares; a subclass sets image_processor, special_texts, pad_id and
    defines `image_ids`, `pixels` and `token_inputs`."""

    image_processor = None
    special_texts: tuple[str, ...] = ()  # the model's image-token texts: typed in a message, they stay text
    reads_videos = False

    def encode_many(self, template, conversations: list, train_on_prompt: bool, mask_history: bool) -> list:
        """`ChatTemplate.encode_many` for this model: placeholders expanded to image tokens (data/media_render.py)."""
        from tunesmith.data.media_render import encode_with_media

        return [encode_with_media(template, c, train_on_prompt, mask_history) for c in conversations]

    def fingerprint(self) -> str:
        """The processor's settings, part of the data cache key: a change in sizes changes the token counts."""
        settings = json.dumps(self.image_processor.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256((type(self).__name__ + settings + self._count_settings()).encode()).hexdigest()

    def _count_settings(self) -> str:
        """What else decides the token counts besides the image processor (none by default)."""
        return ""
