"""LaMa's reference pre- and post-processing, on numpy arrays.

Shared by the ``lama_prepare`` / ``lama_finish`` python-backend steps and the in-process
reference, so both do exactly the same arithmetic. Errors are ValueErrors naming the
problem (the steps report them as HTTP 400).
"""
import numpy as np

MULTIPLE = 8  # three stride-2 downsamplings
MIN_SIDE = 16  # the bottleneck (1/8 scale) needs 2 pixels for its reflection padding


def prepare(image, mask):
    """uint8 HxWx3 image and HxWx1 mask -> FP32 [3,H8,W8] in [0,1], binary FP32 [1,H8,W8], [H, W].

    The largest size is not checked here: the ensemble's guard refused it before decoding.
    """
    height, width = image.shape[:2]
    if mask.shape[:2] != (height, width):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
                         f"{width}x{height}: they must be the same size")
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"the image is {width}x{height} pixels; LaMa needs at least {MIN_SIDE} per side")
    pad = ((0, 0), (0, -height % MULTIPLE), (0, -width % MULTIPLE))
    planar = np.pad(image.transpose(2, 0, 1).astype(np.float32) / 255, pad, mode="symmetric")
    hole = np.pad((mask[..., 0] > 0).astype(np.float32)[None], pad, mode="symmetric")
    return planar, hole, np.array([height, width], dtype=np.int32)


def finish(inpainted, size):
    """FP32 [3,H8,W8] in [0,1] -> uint8 HxWx3 cropped to ``size``; truncation, as the reference does."""
    height, width = int(size[0]), int(size[1])
    return np.clip(inpainted[:, :height, :width] * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
