"""Videos in the data: frames read with PyAV and sampled as LLaMA-Factory samples them.

A video of duration d seconds and N frames gives min(N, data.video_max_frames, floor(d * data.video_fps))
frames (at least one), spread evenly from the first frame to the last. The rate the model is told (Qwen2.5-VL
places a video's temporal patches in time by it) is the rate actually sampled: frames / d.
PyAV (`av` on PyPI, the `video` extra) is needed only where a dataset has videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class VideoSampling:
    """How frames are taken from a video (data.video_fps, data.video_max_frames)."""

    fps: float = 2.0
    max_frames: int = 128

    @classmethod
    def of(cls, data) -> "VideoSampling":
        """The sampling a DataConfig asks for."""
        return cls(data.video_fps, data.video_max_frames)


@dataclass
class Frames:
    images: list  # RGB PIL images, in time order
    fps: float  # frames per second of the sampled frames


def require_av():
    """The PyAV module, or a clear error that says how to get it."""
    try:
        import av
    except ImportError:
        raise TunesmithError("reading videos needs PyAV: pip install 'tunesmith[video]' (or pip install av)") from None
    return av


def check_video(path: Path, where: str) -> str:
    """The absolute path of a video file that exists and holds a video stream; a clear error naming the record
    if not."""
    if not path.is_file():
        raise TunesmithError(f"{where}: video file {path} does not exist; video paths are relative to the "
                             "dataset's folder")
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise TunesmithError(f"{where}: {path} has no video stream")
    except av.FFmpegError as err:
        raise TunesmithError(f"{where}: video file {path} is not a readable video ({err})") from None
    return str(path.resolve())


def read_frames(path: str, sampling: VideoSampling) -> Frames:
    """The sampled frames of the video file at `path` (see the module doc)."""
    import numpy as np

    av = require_av()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode on several cores: every frame up to the last sampled is decoded
        total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)  # when unsaid
        duration = _seconds(stream, container, total)
        count = max(1, min(total, sampling.max_frames, int(duration * sampling.fps)))
        wanted = set(np.linspace(0, total - 1, count).astype(np.int32).tolist())  # as LLaMA-Factory picks them
        container.seek(0)
        images = [frame.to_image().convert("RGB") for index, frame in enumerate(container.decode(stream))
                  if index in wanted]
    if not images:
        raise TunesmithError(f"{path}: no frame could be decoded")
    return Frames(images, len(images) / duration if duration > 0 else sampling.fps)


def _seconds(stream, container, frames: int) -> float:
    """The video's duration: the stream's own, else the container's, else frames over the average rate."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # microseconds (av.time_base)
    return frames / float(stream.average_rate or 1)
