"""A vision-language model's image side, as the data layer needs it: how many tokens an image takes, the
token ids a placeholder becomes, and the pixels the model reads (made in the collator, never cached).

Each architecture family has one class here or beside it (data/vision_llava.py), chosen by the model folder's
model_type in `load_media`. What they share: the placeholders are expanded by data/media_render.py, and a
fingerprint of the processor's settings joins the data cache key.

Qwen2-VL and Qwen2.5-VL write an image as <|vision_start|>, one <|image_pad|> per merged patch, and
<|vision_end|>; a video alike with <|video_pad|>, one per merged patch of each pair of frames (the temporal
patch). Only the image processor is used (transformers' Qwen2-VL processor class also wants a video processor
that needs torchvision): a video's frames (data/video.py) are resized and normalised by it as images, then
laid out as the model's video path wants them (`video_patches`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.image_media import ImageMedia
from tunesmith.data.media import load_image
from tunesmith.data.video import VideoSampling, read_frames
from tunesmith.errors import TunesmithError

QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")
LLAVA_TYPES = ("llava",)
IMAGE_TOKEN_TYPE, VIDEO_TOKEN_TYPE = 1, 2  # mm_token_type_ids: 0 text, 1 image, 2 video (transformers' Qwen2-VL)


class QwenVisionMedia(ImageMedia):
    """Qwen2-VL's image and video tokens and pixels, from its image processor and tokenizer. `timed_videos`:
    the model places a video's temporal patches by the seconds between them (Qwen2.5-VL's second_per_grid_ts)."""

    reads_videos = True

    def __init__(self, image_processor, tokenizer, start="<|vision_start|>", pad="<|image_pad|>",
                 end="<|vision_end|>", video_pad="<|video_pad|>", sampling: VideoSampling = VideoSampling(),
                 timed_videos: bool = False):
        self.image_processor = image_processor
        self.special_texts = (start, pad, end, video_pad)
        self.start_id, self.pad_id, self.end_id, self.video_pad_id = (
            tokenizer.convert_tokens_to_ids(text) for text in self.special_texts)
        self.sampling, self.timed_videos = sampling, timed_videos
        self._counts: dict[str, int] = {}
        self._video_counts: dict[str, int] = {}

    def token_count(self, image) -> int:
        """Image tokens the model reads for an image (a file path, or decoded pixels as the API has them): its
        merged patches, as the processor grids them. Counts of files are remembered."""
        if not isinstance(image, str):
            return self._count(image, image.size)
        if image not in self._counts:
            from PIL import Image

            with Image.open(image) as opened:  # the header only: the grid depends on the image's size alone
                size = opened.size
            self._counts[image] = self._count(image, size)
        return self._counts[image]

    def _count(self, image, size: tuple[int, int]) -> int:
        """Merged patches of an image of `size` (width, height), by the processor's own grid arithmetic, so
        encoding decodes no pixels (the collator makes them); a processor that does not resize grids the
        pixels as they are, so those are processed."""
        processor = self.image_processor
        if not processor.do_resize:
            pixels = load_image(image) if isinstance(image, str) else image
            return int(processor(images=[pixels], return_tensors="pt")["image_grid_thw"][0].prod()) // \
                processor.merge_size ** 2
        width, height = size
        return processor.get_number_of_image_patches(height, width) // processor.merge_size ** 2

    def image_ids(self, image) -> list[int]:
        """The ids an `<image>` placeholder becomes for this image (a file path or decoded pixels)."""
        return [self.start_id] + [self.pad_id] * self.token_count(image) + [self.end_id]

    def pixels(self, images: list) -> dict:
        """pixel_values and image_grid_thw for the images (file paths or decoded pixels) of a batch, in order."""
        loaded = [load_image(image) if isinstance(image, str) else image for image in images]
        return dict(self.image_processor(images=loaded, return_tensors="pt"))

    def video_token_count(self, path: str) -> int:
        """Video tokens the model reads for a video file: merged patches of its sampled frames (remembered)."""
        if path not in self._video_counts:
            self._video_counts[path] = self.video_pixels([path])["pixel_values_videos"].shape[0] // \
                self.image_processor.merge_size ** 2
        return self._video_counts[path]

    def video_ids(self, path: str) -> list[int]:
        """The ids a `<video>` placeholder becomes for this video file."""
        return [self.start_id] + [self.video_pad_id] * self.video_token_count(path) + [self.end_id]

    def video_pixels(self, paths: list[str]) -> dict:
        """pixel_values_videos and video_grid_thw (and, for Qwen2.5-VL, second_per_grid_ts) of video files."""
        import torch

        patches, grids, seconds = [], [], []
        for path in paths:
            frames = read_frames(path, self.sampling)
            video, grid = video_patches(self.image_processor, frames.images)
            patches.append(torch.from_numpy(video))
            grids.append(grid)
            seconds.append(self.image_processor.temporal_patch_size / frames.fps)
        out = {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids)}
        if self.timed_videos:
            out["second_per_grid_ts"] = torch.tensor(seconds)
        return out

    def token_types(self, input_ids):
        """mm_token_type_ids: which positions hold image and video tokens (Qwen2-VL's M-RoPE needs them)."""
        return (input_ids == self.pad_id).long() * IMAGE_TOKEN_TYPE + \
            (input_ids == self.video_pad_id).long() * VIDEO_TOKEN_TYPE

    def token_inputs(self, input_ids) -> dict:
        """What the model takes besides ids and pixels, found from the ids: the token types."""
        return {"mm_token_type_ids": self.token_types(input_ids)}

    def _count_settings(self) -> str:
        return f"{self.sampling}"


def video_patches(image_processor, frames: list):
    """(patches [t * h * w, C * T * P * P], [t, h, w]) of a video's frames as Qwen2-VL's video path takes them:
    frames grouped in pairs (T, the temporal patch size; the last frame repeated to fill a pair), each pair's
    patches side by side in time. The image processor resizes and normalises each frame; it lays out an image
    as that frame repeated T times, so each frame's own pixels are its patches' first temporal slot."""
    import numpy as np

    pair = image_processor.temporal_patch_size
    frames = frames + frames[-1:] * (-len(frames) % pair)
    out = image_processor(images=frames, return_tensors="np")
    _, height, width = (int(size) for size in out["image_grid_thw"][0])
    patch = image_processor.patch_size
    per_frame = out["pixel_values"].reshape(len(frames), height * width, -1, pair, patch, patch)[:, :, :, 0]
    grouped = per_frame.reshape(len(frames) // pair, pair, *per_frame.shape[1:])  # [t, T, h*w, C, P, P]
    video = np.ascontiguousarray(grouped.transpose(0, 2, 3, 1, 4, 5)).reshape(len(frames) // pair * height * width, -1)
    return video, [len(frames) // pair, height, width]


def model_type_of(location) -> str | None:
    """The model_type in a model folder's config.json, None without one (a hub id, a GGUF file)."""
    config_file = Path(location) / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")


def load_media(location, tokenizer, sampling: VideoSampling = VideoSampling()):
    """The image side of the model in folder `location`, or None for a text-only model; `sampling`: how video
    frames are taken (data.video_fps, data.video_max_frames)."""
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

    return QwenVisionMedia(Qwen2VLImageProcessorPil.from_pretrained(str(location)), tokenizer, sampling=sampling,
                           timed_videos=model_type == "qwen2_5_vl")
