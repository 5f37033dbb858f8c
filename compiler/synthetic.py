"""Synthetic identities: seeded, aligned 112x112 RGB face-like images.

No public face data set can ship with the product, so the default model is trained,
evaluated and calibrated on faces drawn here. Each identity is a fixed set of
geometric traits placed around the ArcFace 5-point template (face shape, eye spacing
and size, brows, nose, mouth, hairline, ears, moles, beard, glasses, skin pattern);
each image of it adds nuisance that a verification model must ignore (pose, scale,
shift, expression, lighting gradient, colour cast, background, occlusion, blur,
noise). Colour is jittered per image so that it cannot identify anyone on its own.

Identities live in separate namespaces: `TRAIN` for training the default model and
`EVAL` for everything else (`--synthetic N`, tests, calibration), so evaluation never
sees a face the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 112
TRAIN = 1
EVAL = 2
EVAL_IMAGES_PER_IDENTITY = 5

# ArcFace 112x112 template: eyes, nose tip, mouth corners (x, y).
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


@dataclass(frozen=True)
class Identity:
    """Stable traits of one synthetic person (pixel units in the aligned frame)."""

    face_c: tuple[float, float]
    face_r: tuple[float, float]
    face_power: float  # superellipse exponent: 2 = oval, larger = squarer jaw
    skin: np.ndarray
    hair: np.ndarray
    hair_top: float  # hairline height above the eyes
    hair_wave: np.ndarray  # (3, 2) amplitude/phase of the hairline's harmonics
    hair_volume: float
    parting: float
    ear_r: float
    eye_dx: float  # half the distance between the eyes
    eye_y: float
    eye_r: tuple[float, float]
    eye_tilt: float
    iris: np.ndarray
    brow_gap: float
    brow_len: float
    brow_thick: float
    brow_angle: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    lips: np.ndarray
    moles: np.ndarray  # (k, 3): x, y, radius
    beard: float  # 0 = none
    glasses: int  # 0 none, 1 round, 2 square
    pattern: np.ndarray  # low-frequency skin pattern, (6, 6)


def identity(namespace: int, index: int) -> Identity:
    """The traits of identity `index` in `namespace`: same arguments, same person."""
    rng = np.random.default_rng([namespace, index, 7919])
    u = rng.uniform
    skin = np.array([u(0.45, 0.95), 0, 0])
    skin[1] = skin[0] * u(0.72, 0.88)
    skin[2] = skin[0] * u(0.55, 0.8)
    hair = np.array([u(0.05, 0.6)] * 3) * np.array([1.0, u(0.7, 0.95), u(0.45, 0.9)])
    n_moles = rng.integers(0, 4)
    moles = np.column_stack([u(36, 76, n_moles), u(58, 100, n_moles), u(1.0, 2.2, n_moles)])
    return Identity(
        face_c=(56.0 + u(-2, 2), 66.0 + u(-3, 3)),
        face_r=(u(30, 40), u(40, 50)),
        face_power=u(1.8, 3.2),
        skin=skin,
        hair=hair,
        hair_top=u(10, 24),
        hair_wave=np.column_stack([u(0, 5, 3), u(0, 2 * np.pi, 3)]),
        hair_volume=u(2, 10),
        parting=u(-12, 12),
        ear_r=u(4, 8),
        eye_dx=u(15, 20.5),
        eye_y=51.6 + u(-3.5, 3.5),
        eye_r=(u(4.5, 7.5), u(2.2, 4.0)),
        eye_tilt=u(-0.15, 0.15),
        iris=rng.uniform(0.05, 0.6, 3),
        brow_gap=u(5, 10),
        brow_len=u(8, 15),
        brow_thick=u(1.2, 3.5),
        brow_angle=u(-0.3, 0.3),
        nose_len=u(12, 24),
        nose_w=u(3.5, 8),
        mouth_y=92.3 + u(-4, 4),
        mouth_w=u(10, 18),
        lip_thick=u(1.5, 4.0),
        lips=skin * np.array([u(0.55, 0.85), u(0.35, 0.6), u(0.35, 0.6)]),
        moles=moles,
        beard=u(0.3, 0.85) if u() < 0.25 else 0.0,
        glasses=int(rng.choice(3, p=[0.75, 0.125, 0.125])),
        pattern=rng.normal(0, 1, (6, 6)),
    )


def _upsample(grid: np.ndarray) -> np.ndarray:
    """Smooth a small random grid up to the image size (bilinear)."""
    n = grid.shape[0]
    pos = np.linspace(0, n - 1, SIZE)
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
    t = pos - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _ellipse(x, y, cx, cy, rx, ry, power=2.0):
    """Coverage (0..1, anti-aliased) of a superellipse."""
    d = (np.abs((x - cx) / rx) ** power + np.abs((y - cy) / ry) ** power) ** (1.0 / power)
    return np.clip((1.0 - d) * max(min(rx, ry), 1.0) + 0.5, 0.0, 1.0)


def _segment(x, y, x0, y0, x1, y1, width):
    """Coverage of a thick line segment."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
    dist = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
    return np.clip(width / 2 - dist + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    img += alpha[..., None] * (np.asarray(colour, dtype=np.float32) - img)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return img
    radius = int(np.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * padded[i : i + SIZE] for i in range(len(k)))
    padded = np.pad(img, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(k[i] * padded[:, i : i + SIZE] for i in range(len(k)))


def render(person: Identity, rng: np.random.Generator) -> np.ndarray:
    """One image of `person` with fresh nuisance: uint8 RGB, HWC."""
    u = rng.uniform
    # Pose: similarity transform (rotation, scale, shift) about the template centre,
    # plus a yaw that moves features by their depth.
    angle, scale = u(-0.17, 0.17), u(0.9, 1.1)
    shift = u(-4, 4, 2)
    yaw = u(-1, 1)
    c, s = np.cos(angle), np.sin(angle)
    gx, gy = _XX - 56 - shift[0], _YY - 60 - shift[1]
    x = (c * gx + s * gy) / scale + 56
    y = (-s * gx + c * gy) / scale + 60

    def at(px, depth):  # a feature's x after yaw: deeper (nearer) features move more
        return px + yaw * depth * 5

    # Background: colour, gradient and blotches, all unrelated to the person.
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[...] = rng.uniform(0, 1, 3)
    grad = (_XX * u(-1, 1) + _YY * u(-1, 1)) / SIZE
    img += grad[..., None] * rng.uniform(-0.4, 0.4, 3)
    img += _upsample(rng.normal(0, 0.12, (5, 5)))[..., None] * rng.uniform(0.3, 1.0, 3)

    p = person
    fx, fy = p.face_c
    rx, ry = p.face_r
    hair_col = p.hair * u(0.85, 1.15)
    skin_col = p.skin * u(0.9, 1.1)
    # Hair behind the head, neck, ears, face.
    _paint(
        img, _ellipse(x, y, at(fx, 0), fy - 6, rx + p.hair_volume, ry + p.hair_volume * 0.6) * (y < fy + 8), hair_col
    )
    _paint(img, (np.abs(x - at(fx, 0)) < rx * 0.55) * (y > fy + ry * 0.6), skin_col * 0.85)
    for side in (-1, 1):
        _paint(img, _ellipse(x, y, at(fx + side * rx, -0.3), p.eye_y + 8, p.ear_r * 0.7, p.ear_r * 1.4), skin_col * 0.9)
    face = _ellipse(x, y, at(fx, 0), fy, rx, ry, p.face_power)
    _paint(img, face, skin_col)
    shade = 1 + 0.06 * _upsample(p.pattern)
    img *= np.where(face[..., None] > 0.5, shade[..., None], 1.0)

    # Hairline: a wavy curve with a parting; hair covers the face above it.
    xr = (x - at(fx, 0.2)) / rx
    wave = sum(a * np.cos((k + 1) * np.pi * xr + ph) for k, (a, ph) in enumerate(p.hair_wave))
    line = (
        p.eye_y - p.hair_top - 6 + wave + 6 * np.abs(xr) ** 2 - 4 * np.exp(-(((x - at(fx + p.parting, 0.2)) / 3) ** 2))
    )
    _paint(img, np.clip(line - y + 0.5, 0, 1) * (face > 0), hair_col)

    # Expression: eyebrow raise, eye openness (blinks), smile and mouth opening.
    raise_ = u(-1.5, 2.5)
    openness = 0.15 if u() < 0.08 else u(0.7, 1.15)
    smile, mouth_open = u(-0.6, 1.2), max(0.0, u(-2.0, 4.0))

    for side in (-1, 1):
        ex, ey = at(56 + side * p.eye_dx, 0.5), p.eye_y + side * p.eye_tilt * p.eye_dx
        white = _ellipse(x, y, ex, ey, p.eye_r[0], p.eye_r[1] * openness)
        _paint(img, white, (0.92, 0.92, 0.9))
        iris = _ellipse(x, y, ex + yaw * 1.5, ey, p.eye_r[1] * 0.95, p.eye_r[1] * 0.95) * white
        _paint(img, iris, p.iris)
        _paint(img, _ellipse(x, y, ex + yaw * 1.5, ey, 1.1, 1.1) * white, (0.02, 0.02, 0.02))
        by = ey - p.eye_r[1] - p.brow_gap - raise_
        half = p.brow_len / 2
        tilt = side * p.brow_angle * half
        _paint(img, _segment(x, y, ex - half, by + tilt, ex + half, by - tilt, p.brow_thick), hair_col * 0.9)
        if p.glasses:
            power = 2.0 if p.glasses == 1 else 6.0
            outer = _ellipse(x, y, ex, ey, p.eye_r[0] + 4, p.eye_r[0] + 2, power)
            inner = _ellipse(x, y, ex, ey, p.eye_r[0] + 2.8, p.eye_r[0] + 0.8, power)
            _paint(img, np.clip(outer - inner, 0, 1), (0.08, 0.06, 0.05))
    if p.glasses:
        _paint(
            img,
            _segment(
                x,
                y,
                at(56 - p.eye_dx + p.eye_r[0] + 3, 0.5),
                p.eye_y,
                at(56 + p.eye_dx - p.eye_r[0] - 3, 0.5),
                p.eye_y,
                1.4,
            ),
            (0.08, 0.06, 0.05),
        )

    # Nose: a shaded ridge and two nostrils.
    nx, ny = at(TEMPLATE[2, 0], 1.0), TEMPLATE[2, 1]
    top = p.eye_y + 4
    _paint(img, _segment(x, y, at(56, 0.7), top, nx, ny - 2, p.nose_w * 0.5) * 0.35, skin_col * 0.7)
    for side in (-1, 1):
        _paint(img, _ellipse(x, y, nx + side * p.nose_w * 0.45, ny + 1, 1.6, 1.0) * 0.8, skin_col * 0.35)

    # Mouth: lips bent by the smile, dark inside when open; beard around it.
    mx, my = at(56, 0.6), p.mouth_y
    bend = smile * ((x - mx) / p.mouth_w) ** 2 * 4
    lips = _ellipse(x, y + bend, mx, my, p.mouth_w, p.lip_thick + mouth_open / 2)
    if p.beard:
        beard = _ellipse(x, y, at(fx, 0.3), my + 4, rx * 0.85, ry * 0.45) * face * (y > my - 10)
        beard *= 0.5 + 0.5 * (_upsample(rng.normal(0, 1, (8, 8))) > -0.5)
        _paint(img, beard * p.beard, hair_col)
    _paint(img, lips, p.lips * u(0.9, 1.1))
    if mouth_open > 0.5:
        _paint(img, _ellipse(x, y + bend, mx, my, p.mouth_w * 0.8, mouth_open / 2), (0.15, 0.05, 0.05))

    for mole_x, mole_y, radius in p.moles:
        _paint(img, _ellipse(x, y, at(mole_x, 0.4), mole_y, radius, radius), skin_col * 0.35)

    # Occlusion: a hand, scarf or object over part of the face.
    if u() < 0.3:
        ox, oy = u(20, 92), u(40, 105)
        cover = _ellipse(_XX, _YY, ox, oy, u(8, 22), u(6, 18), u(2, 6))
        _paint(img, cover, rng.uniform(0, 1, 3))

    # Camera: lighting gradient, colour cast, contrast, blur, sensor noise.
    light = 1 + u(0.0, 0.6) * ((_XX - 56) * np.cos(a := u(0, 2 * np.pi)) + (_YY - 56) * np.sin(a)) / 80
    img *= light[..., None]
    img *= rng.uniform(0.7, 1.3, 3) * u(0.7, 1.2)
    img = (img - img.mean()) * u(0.7, 1.3) + img.mean()
    img = _blur(img, u(0, 1.3))
    img += rng.normal(0, u(0.005, 0.04), img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_identity(namespace: int, index: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` images of one identity, uint8 RGB HWC [count,112,112,3], reproducible."""
    person = identity(namespace, index)
    rng = np.random.default_rng([namespace, index, seed, 104729])
    return np.stack([render(person, rng) for _ in range(count)])


def synthetic_eval_set(n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`--synthetic N`: N images of held-out identities (5 each), uint8 RGB NCHW, labels.

    Identities come from the EVAL namespace, never used in training. `seed` picks the
    block of identities, so different seeds give disjoint people.
    """
    if n_images < 2:
        raise ValueError("need at least 2 images")
    n_ids = -(-n_images // EVAL_IMAGES_PER_IDENTITY)
    first = seed * 1_000_000
    images, labels = [], []
    for k in range(n_ids):
        count = min(EVAL_IMAGES_PER_IDENTITY, n_images - k * EVAL_IMAGES_PER_IDENTITY)
        images.append(render_identity(EVAL, first + k, count))
        labels += [k] * count
    return np.concatenate(images).transpose(0, 3, 1, 2).copy(), np.asarray(labels)
