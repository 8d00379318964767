"""Approximate face-parsing maps (LaPa labels) rasterised from 68 iBUG-300W landmarks, in pure numpy.

MARLIN's Fasking needs a per-frame face-parsing map; the reference runs a parsing network (FaceXZoo) on
every frame. When only landmarks are at hand, `landmarks_to_label_map` draws polygons instead.

LaPa labels: 0 background, 1 skin, 2 left eyebrow, 3 right eyebrow, 4 left eye, 5 right eye, 6 nose,
7 upper lip, 8 inner mouth, 9 lower lip, 10 hair. "Left" here is the image-left side (iBUG brow 17–21,
eye 36–41); Fasking only needs each brow paired with the eye on its own side, which holds either way.

68-point layout (iBUG-300W): jaw 0–16, brows 17–21 / 22–26, nose bridge 27–30, nose base 31–35,
eyes 36–41 / 42–47, outer lips 48–59, inner lips 60–67.

Approximations (documented, deliberate):
* the face "up" axis runs from the chin (8) to the mean of the brow points, so in-plane roll is followed;
  L = chin-to-brow distance sets every proportion below;
* skin = polygon through the jaw line and the brow points raised by 0.45·L (forehead; the hairline of an
  average face sits about half the brow–chin distance above the brows). No ears and no neck: a jaw line
  bounds the face, and what lies outside is background;
* hair = a band above the forehead up to 0.8·L over the brows, spreading to the jaw ends at the sides,
  drawn whether or not the person has hair (bald heads, hats and fringes are not modelled);
* eyebrows = bands along the brow points, 0.02·L above to 0.05·L below (iBUG points trace the upper brow
  edge); eyes = the eye contours; nose = bridge top (27, widened) to the nostril base 31–35;
  upper/lower lips = between the outer and inner lip contours; inner mouth = inner lip contour (empty
  when the mouth is closed);
* later layers overwrite earlier ones: hair, skin, nose, brows, eyes, lips, inner mouth;
* beards, glasses, hands and other occlusions are ignored; on turned heads the far jaw line (see the
  annotations README) makes the skin polygon narrower than the visible cheek.
"""
from __future__ import annotations

import numpy as np

__all__ = ["LAPA_LABELS", "landmarks_to_label_map", "landmarks_to_label_maps", "fill_polygon"]

LAPA_LABELS: dict[str, int] = {
    "background": 0,
    "skin": 1,
    "left_eyebrow": 2,
    "right_eyebrow": 3,
    "left_eye": 4,
    "right_eye": 5,
    "nose": 6,
    "upper_lip": 7,
    "inner_mouth": 8,
    "lower_lip": 9,
    "hair": 10,
}

JAW = np.arange(0, 17)
LEFT_BROW, RIGHT_BROW = np.arange(17, 22), np.arange(22, 27)
BROWS = np.arange(17, 27)
LEFT_EYE, RIGHT_EYE = np.arange(36, 42), np.arange(42, 48)
NOSE_BASE = np.arange(31, 36)
OUTER_LIPS, INNER_LIPS = np.arange(48, 60), np.arange(60, 68)
CHIN, NOSE_TOP = 8, 27

# Proportions in units of L, the chin-to-brow distance (see the module docstring).
FOREHEAD_HEIGHT = 0.45
HAIR_TOP = 0.8
HAIR_SPREAD = 1.2  # lateral spread of the hair band's top edge about the brow centre
HAIR_SIDE_OUT = 0.08  # hair beside the temples, outward of jaw points 0 and 16
BROW_ABOVE, BROW_BELOW = 0.02, 0.05
NOSE_BRIDGE_HALF_WIDTH = 0.3  # of half the nostril-base width


def fill_polygon(canvas: np.ndarray, polygon: np.ndarray, value: int) -> None:
    """Paint the pixels whose centres lie inside `polygon` (even-odd rule), in place.

    Args:
        canvas: (h, w) integer array.
        polygon: (v, 2) float (x, y) vertices in continuous pixel coordinates (pixel i spans [i, i+1)).
        value: label to write.
    """
    height, width = canvas.shape
    x_min = max(int(np.floor(polygon[:, 0].min())), 0)
    x_max = min(int(np.ceil(polygon[:, 0].max())), width)
    y_min = max(int(np.floor(polygon[:, 1].min())), 0)
    y_max = min(int(np.ceil(polygon[:, 1].max())), height)
    if x_min >= x_max or y_min >= y_max:
        return
    centre_x = np.arange(x_min, x_max, dtype=np.float64)[None, :] + 0.5
    centre_y = np.arange(y_min, y_max, dtype=np.float64)[:, None] + 0.5
    inside = np.zeros((y_max - y_min, x_max - x_min), dtype=bool)
    start = polygon.astype(np.float64)
    end = np.roll(start, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(start, end):
        if y0 == y1:
            continue  # horizontal edges cross no scan line (and would divide by zero below)
        crosses = (y0 > centre_y) != (y1 > centre_y)
        x_cross = x0 + (centre_y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (centre_x < x_cross)
    canvas[y_min:y_max, x_min:x_max][inside] = value


def _face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit up and right vectors of the face and the chin-to-brow length L."""
    brow_centre = landmarks[BROWS].mean(axis=0)
    up = brow_centre - landmarks[CHIN]
    length = float(np.linalg.norm(up))
    if length < 1e-6:
        raise ValueError("degenerate landmarks: chin and brows coincide")
    up = up / length
    # Right = image-left to image-right side of the face, perpendicular to up (y grows downwards).
    right = np.array([-up[1], up[0]])
    if np.dot(right, landmarks[JAW[-1]] - landmarks[JAW[0]]) < 0:
        right = -right
    return up, right, length


def landmarks_to_label_map(lm68: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise an approximate LaPa face-parsing map from 68 landmarks (see the module docstring).

    Args:
        lm68: (68, 2) float (x, y) pixel coordinates in iBUG-300W order, in the frame of the output map.
        height: map height in pixels.
        width: map width in pixels.

    Returns:
        (height, width) uint8 labels in 0..10.
    """
    points = np.asarray(lm68, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"expected finite (68, 2) landmarks, got shape {points.shape}")
    up, right, length = _face_axes(points)
    labels = np.zeros((height, width), dtype=np.uint8)

    brows = points[BROWS]
    forehead = brows + up * FOREHEAD_HEIGHT * length
    brow_centre = brows.mean(axis=0)
    hair_top = brow_centre + (brows - brow_centre) * HAIR_SPREAD + up * HAIR_TOP * length
    hair = np.concatenate([
        points[JAW[:1]] - right * HAIR_SIDE_OUT * length,
        hair_top,
        points[JAW[-1:]] + right * HAIR_SIDE_OUT * length,
    ])
    fill_polygon(labels, hair, LAPA_LABELS["hair"])
    fill_polygon(labels, np.concatenate([points[JAW], forehead[::-1]]), LAPA_LABELS["skin"])

    nostril_half_width = np.linalg.norm(points[NOSE_BASE[-1]] - points[NOSE_BASE[0]]) / 2
    bridge = right * NOSE_BRIDGE_HALF_WIDTH * nostril_half_width
    nose = np.concatenate([points[[NOSE_TOP]] - bridge, points[NOSE_BASE], points[[NOSE_TOP]] + bridge])
    fill_polygon(labels, nose, LAPA_LABELS["nose"])

    for indices, name in ((LEFT_BROW, "left_eyebrow"), (RIGHT_BROW, "right_eyebrow")):
        brow = points[indices]
        band = np.concatenate([brow + up * BROW_ABOVE * length, (brow - up * BROW_BELOW * length)[::-1]])
        fill_polygon(labels, band, LAPA_LABELS[name])
    fill_polygon(labels, points[LEFT_EYE], LAPA_LABELS["left_eye"])
    fill_polygon(labels, points[RIGHT_EYE], LAPA_LABELS["right_eye"])

    # Lips: outer contour 48–54 (upper) / 54–59,48 (lower) closed through the inner contour 60–64 / 64–67,60.
    upper_lip = np.concatenate([points[48:55], points[[64, 63, 62, 61, 60]]])
    lower_lip = np.concatenate([points[[54, 55, 56, 57, 58, 59, 48]], points[[60, 67, 66, 65, 64]]])
    fill_polygon(labels, upper_lip, LAPA_LABELS["upper_lip"])
    fill_polygon(labels, lower_lip, LAPA_LABELS["lower_lip"])
    fill_polygon(labels, points[INNER_LIPS], LAPA_LABELS["inner_mouth"])
    return labels


def landmarks_to_label_maps(lm68: np.ndarray, height: int, width: int) -> np.ndarray:
    """`landmarks_to_label_map` over a sequence.

    Args:
        lm68: (t, 68, 2) landmarks per frame.
        height: map height.
        width: map width.

    Returns:
        (t, height, width) uint8.
    """
    return np.stack([landmarks_to_label_map(frame, height, width) for frame in np.asarray(lm68)])
