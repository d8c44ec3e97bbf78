"""A vision-language model's image side, as the data layer needs it: how many tokens an image takes, the
token ids a placeholder becomes, and the pixels the model reads (made in the collator, never cached).

Each architecture family has one class here or beside it (data/vision_llava.py), chosen by the model folder's
model_type in `load_media`. What they share: the placeholders are expanded by data/media_render.py, and a
fingerprint of the processor's settings joins the data cache key.

Qwen2-VL and Qwen2.5-VL write an image as <|vision_start|>, one <|image_pad|> per merged patch, and
<|vision_end|>. Only the image processor is used (transformers' Qwen2-VL processor class also wants a video
processor that needs torchvision); the placeholders are expanded here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunesmith.data.media import load_image
from tunesmith.errors import TunesmithError

QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")
LLAVA_TYPES = ("llava",)
IMAGE_TOKEN_TYPE = 1  # mm_token_type_ids: 0 text, 1 image, 2 video (transformers' Qwen2-VL convention)


class ImageMedia:
    """What every family's image side shares; a subclass sets image_processor, special_texts, pad_id and
    defines `image_ids`, `pixels` and `token_inputs`."""

    image_processor = None
    special_texts: tuple[str, ...] = ()  # the model's image-token texts: typed in a message, they stay text

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


class QwenVisionMedia(ImageMedia):
    """Qwen2-VL's image tokens and pixels, from its image processor and tokenizer."""

    def __init__(self, image_processor, tokenizer, start="<|vision_start|>", pad="<|image_pad|>",
                 end="<|vision_end|>"):
        self.image_processor = image_processor
        self.special_texts = (start, pad, end)
        self.start_id, self.pad_id, self.end_id = (tokenizer.convert_tokens_to_ids(text) for text in self.special_texts)
        self._counts: dict[str, int] = {}

    def token_count(self, image) -> int:
        """Image tokens the model reads for an image (a file path, or decoded pixels as the API has them): its
        merged patches, as the processor grids them. Counts of files are remembered."""
        if not isinstance(image, str):
            return self._count(image)
        if image not in self._counts:
            self._counts[image] = self._count(load_image(image))
        return self._counts[image]

    def _count(self, pixels) -> int:
        grid = self.image_processor(images=[pixels], return_tensors="pt")["image_grid_thw"][0]
        return int(grid.prod()) // self.image_processor.merge_size ** 2

    def image_ids(self, image) -> list[int]:
        """The ids an `<image>` placeholder becomes for this image (a file path or decoded pixels)."""
        return [self.start_id] + [self.pad_id] * self.token_count(image) + [self.end_id]

    def pixels(self, images: list) -> dict:
        """pixel_values and image_grid_thw for the images (file paths or decoded pixels) of a batch, in order."""
        loaded = [load_image(image) if isinstance(image, str) else image for image in images]
        return dict(self.image_processor(images=loaded, return_tensors="pt"))

    def token_types(self, input_ids):
        """mm_token_type_ids: which positions hold image tokens (Qwen2-VL's M-RoPE needs them)."""
        return (input_ids == self.pad_id).long() * IMAGE_TOKEN_TYPE

    def token_inputs(self, input_ids) -> dict:
        """What the model takes besides ids and pixels, found from the ids: the token types."""
        return {"mm_token_type_ids": self.token_types(input_ids)}


def model_type_of(location) -> str | None:
    """The model_type in a model folder's config.json, None without one (a hub id, a GGUF file)."""
    config_file = Path(location) / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")


def load_media(location, tokenizer):
    """The image side of the model in folder `location`, or None for a text-only model."""
    model_type = model_type_of(location)
    if model_type not in QWEN_VL_TYPES + LLAVA_TYPES:
        return None
    if not (Path(location) / "preprocessor_config.json").is_file():
        raise TunesmithError(f"{location} is a {model_type} model without preprocessor_config.json; copy the "
                             "model's processor files into the folder")
    if model_type in LLAVA_TYPES:
        from tunesmith.data.vision_llava import load_llava_media

        return load_llava_media(location, tokenizer)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return QwenVisionMedia(Qwen2VLImageProcessorPil.from_pretrained(str(location)), tokenizer)
