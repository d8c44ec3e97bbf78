"""LLaVA-1.5 style models' image side: a CLIP-like vision tower whose patch features, through a projector,
stand in for the `<image>` tokens of a Llama-like language model.

Every image is resized and cropped to the tower's one input size, so every image takes the same number of
tokens: the tower's (image_size / patch_size)^2 patch features, plus its class token, less one when the
model's vision_feature_select_strategy is "default" (which drops the first feature, the class token of a CLIP
tower). The placeholder becomes that many `<image>` tokens (the model's image_token_id).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.media import load_image
from tunesmith.data.image_media import ImageMedia
from tunesmith.errors import TunesmithError

# Features a tower gives beside its patches: CLIP prepends a class token, SigLIP has none.
CLASS_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}


class LlavaMedia(ImageMedia):
    """LLaVA's image tokens (a fixed count per image) and pixels, from its image processor and tokenizer."""

    def __init__(self, image_processor, tokenizer, tokens_per_image: int, image_token: str = "<image>"):
        self.image_processor = image_processor
        self.tokens_per_image = tokens_per_image
        self.special_texts = (image_token,)
        self.pad_id = tokenizer.convert_tokens_to_ids(image_token)

    def token_count(self, image) -> int:
        """Image tokens the model reads for an image: the same for every image (the tower's fixed input)."""
        return self.tokens_per_image

    def image_ids(self, image) -> list[int]:
        return [self.pad_id] * self.tokens_per_image

    def pixels(self, images: list) -> dict:
        """pixel_values [images, 3, size, size] for the images (file paths or decoded pixels), in order."""
        loaded = [load_image(image) if isinstance(image, str) else image for image in images]
        return {"pixel_values": self.image_processor(images=loaded, return_tensors="pt")["pixel_values"]}

    def token_inputs(self, input_ids) -> dict:
        """LLaVA finds its image tokens by id alone: nothing more than ids and pixels."""
        return {}

    def _count_settings(self) -> str:
        return str(self.tokens_per_image)


def image_token_count(config) -> int:
    """Tokens one image takes in a LLaVA model of `config` (a transformers LlavaConfig): see the module doc."""
    vision = config.vision_config
    if vision.model_type not in CLASS_TOKENS:
        raise TunesmithError(f"LLaVA models with a {vision.model_type} vision tower are not supported; supported "
                             f"towers: {', '.join(CLASS_TOKENS)}")
    features = (vision.image_size // vision.patch_size) ** 2 + CLASS_TOKENS[vision.model_type]
    return features - (config.vision_feature_select_strategy == "default")


def load_llava_media(location, tokenizer) -> LlavaMedia:
    """The image side of the LLaVA model in folder `location`, its settings checked against each other."""
    from transformers import AutoConfig, AutoImageProcessor

    config = AutoConfig.from_pretrained(str(location))
    image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
    if image_token is None or tokenizer.convert_tokens_to_ids(image_token) != config.image_token_id:
        raise TunesmithError(f"{location}: the model's image_token_id {config.image_token_id} is not a token of its "
                             "tokenizer; use the tokenizer the model was trained with (it adds '<image>')")
    processor = AutoImageProcessor.from_pretrained(str(location))
    size = _processed_size(processor)
    if size is not None and size != config.vision_config.image_size:
        raise TunesmithError(f"{Path(location) / 'preprocessor_config.json'} makes {size}-pixel images but the "
                             f"vision tower takes {config.vision_config.image_size}; use the model's own "
                             "processor files")
    return LlavaMedia(processor, tokenizer, image_token_count(config), image_token)


def _processed_size(processor) -> int | None:
    """The side of the square images the processor makes (its crop size), None where it does not say."""
    settings = json.loads(processor.to_json_string())
    crop = settings.get("crop_size") if settings.get("do_center_crop", True) else None
    if isinstance(crop, dict) and crop.get("height") == crop.get("width"):
        return crop.get("height")
    return None
