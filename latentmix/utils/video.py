"""Walk frames as a video file (MP4 with H.264, or WebM with VP9) through imageio-ffmpeg.

imageio-ffmpeg ships its own ffmpeg build, so no system codec is needed. Frames are upscaled with
nearest-neighbour sampling to at least :data:`MIN_SIDE` pixels (an 8×8 digit is unwatchable otherwise)
and to a multiple of 16, which H.264 and VP9 encoders want. A video is written to a hidden temporary
beside its path and renamed into place when ffmpeg has finished: a failed or interrupted encode leaves
no half-written video.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}
MIN_SIDE = 256


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ValueError(
            "video: writing video needs imageio-ffmpeg (pip install imageio-ffmpeg); or leave video out (--video none)"
        ) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=4)
def _encoders(exe: str) -> str:
    done = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    return done.stdout


def check_video_format(fmt: str) -> str:
    """The encoder for ``fmt`` (``"mp4"`` or ``"webm"``); ValueError when it or ffmpeg is missing."""
    if fmt not in VIDEO_CODECS:
        raise ValueError(f"video must be one of {', '.join(VIDEO_CODECS)} or none, got {fmt!r}")
    codec = VIDEO_CODECS[fmt]
    if f" {codec} " not in _encoders(_ffmpeg_exe()):
        raise ValueError(f"video: this ffmpeg build has no {codec} encoder for {fmt}; choose another format")
    return codec


def video_side(size: int) -> int:
    """Side of the video frames for images of side ``size``: at least MIN_SIDE, a multiple of 16."""
    scale = max(1, -(-MIN_SIDE // size))
    return -(-(size * scale) // 16) * 16


def save_video(frames: np.ndarray, path: str | os.PathLike, *, fps: float) -> Path:
    """Write uint8 frames (T, H, W, 3 or 1) as a video; the format follows the suffix (.mp4 or .webm)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    codec = check_video_format(fmt)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if frames.ndim != 4 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, C) with T >= 1, got {frames.dtype} {frames.shape}")
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    size = (video_side(width), video_side(height))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{uuid.uuid4().hex[:8]}-{path.name}"  # keeps the suffix: ffmpeg picks the container by it
    params = ["-crf", "18"] if codec == "libx264" else ["-crf", "24", "-b:v", "0"]
    writer = imageio_ffmpeg.write_frames(
        str(tmp), size, fps=float(fps), codec=codec, pix_fmt_out="yuv420p", macro_block_size=1,
        output_params=params, ffmpeg_log_level="error",
    )  # fmt: skip
    try:
        writer.send(None)
        for frame in frames:
            image = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).convert("RGB")
            writer.send(np.ascontiguousarray(np.asarray(image.resize(size, Image.Resampling.NEAREST))))
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        if tmp.exists():
            tmp.unlink()
    return path
