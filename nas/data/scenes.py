"""Procedural 3D indoor scenes, ray cast per pixel into an image and exact dense labels.

Every sample is a deterministic function of ``(seed, index)``. World frame: y up, metres.
Camera frame (labels): x right, y down, z forward, as in NYUD-v2 normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("floor", "wall", "ceiling", "rug", "painting", "ball", "cabinet", "pillar", "person")
PARTS = ("background", "head", "torso", "arms", "legs")
SALIENT = ("ball", "cabinet", "pillar", "person")
_CLS = {n: i for i, n in enumerate(CLASSES)}
_PART = {n: i for i, n in enumerate(PARTS)}

# base albedo per class (RGB in [0, 1]); each instance jitters around it
_ALBEDO = np.array(
    [
        [0.55, 0.42, 0.30],  # floor (wood)
        [0.80, 0.78, 0.72],  # wall
        [0.92, 0.92, 0.90],  # ceiling
        [0.60, 0.15, 0.18],  # rug
        [0.20, 0.35, 0.60],  # painting
        [0.85, 0.55, 0.10],  # ball
        [0.35, 0.25, 0.18],  # cabinet
        [0.65, 0.65, 0.70],  # pillar
        [0.75, 0.55, 0.45],  # person
    ],
    dtype=np.float32,
)
_EPS = 1e-4


@dataclass
class SceneSample:
    image: np.ndarray  # H x W x 3 uint8
    semseg: np.ndarray  # H x W uint8, class index
    depth: np.ndarray  # H x W float32, metres along the optical axis
    normals: np.ndarray  # H x W x 3 float32, unit, camera frame
    edge: np.ndarray  # H x W uint8 {0, 1}, one pixel wide
    saliency: np.ndarray  # H x W uint8 {0, 1}
    parts: np.ndarray  # H x W uint8, PARTS index (0 = background)


class _Hits:
    """Nearest-hit buffers over all rays."""

    def __init__(self, n: int):
        self.t = np.full(n, np.inf, dtype=np.float32)
        self.normal = np.zeros((n, 3), dtype=np.float32)
        self.cls = np.zeros(n, dtype=np.int16)
        self.inst = np.zeros(n, dtype=np.int16)
        self.part = np.zeros(n, dtype=np.int16)
        self.albedo = np.zeros((n, 3), dtype=np.float32)

    def update(self, t, normal, cls, inst, albedo, part=0, rays=None):
        """t: distances (inf for misses) of all rays, or of the rays indexed by ``rays``; normal: per ray
        (n, 3) or one (3,) world normal."""
        current = self.t if rays is None else self.t[rays]
        closer = t < current
        if not closer.any():
            return
        sub = np.nonzero(closer)[0]
        idx = sub if rays is None else rays[sub]
        self.t[idx] = t[sub]
        self.normal[idx] = normal[sub] if np.ndim(normal) == 2 else normal
        self.cls[idx] = cls
        self.inst[idx] = inst
        self.part[idx] = part
        self.albedo[idx] = albedo


def _plane(o, d, axis, value, facing):
    """Distance to the plane {p[axis] = value}; only hits rays approaching from the facing side."""
    dn = d[:, axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - o[axis]) / dn
    ok = (t > _EPS) & (dn * facing < 0)
    return np.where(ok, t, np.inf).astype(np.float32)


def _sphere(o, d, c, r):
    oc = o - c
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    ok = disc > 0
    t = -b - np.sqrt(np.where(ok, disc, 0.0))
    ok &= t > _EPS
    t = np.where(ok, t, np.inf).astype(np.float32)
    p = o + d * np.where(ok, t, 0.0)[:, None]
    return t, (p - c) / r


def _box(o, d, c, half, yaw):
    """Box centred at c with half extents, rotated by yaw about the vertical axis (slab method)."""
    cs, sn = np.cos(yaw), np.sin(yaw)
    rot = np.array([[cs, 0.0, -sn], [0.0, 1.0, 0.0], [sn, 0.0, cs]], dtype=np.float32)  # world -> box
    ol = rot @ (o - c)
    dl = d @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1 = (-half - ol) * inv
        t2 = (half - ol) * inv
    tn = np.minimum(t1, t2)
    tf = np.maximum(t1, t2)
    tnear = np.nan_to_num(tn, nan=-np.inf).max(axis=1)
    tfar = np.nan_to_num(tf, nan=np.inf).min(axis=1)
    ok = (tnear <= tfar) & (tnear > _EPS)
    axis = np.nan_to_num(tn, nan=-np.inf).argmax(axis=1)
    nl = np.zeros_like(dl)
    rows = np.arange(len(d))
    nl[rows, axis] = -np.sign(dl[rows, axis])
    return np.where(ok, tnear, np.inf).astype(np.float32), nl @ rot


def _cylinder(o, d, cx, cz, r, y0, y1):
    """Vertical capped cylinder (side and top cap)."""
    ox, oz = o[0] - cx, o[2] - cz
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (ox * d[:, 0] + oz * d[:, 2])
    c = ox * ox + oz * oz - r * r
    disc = b * b - 4 * a * c
    ok = (disc > 0) & (a > 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.where(ok, disc, 0.0))) / (2 * a)
    y = o[1] + ts * d[:, 1]
    ok &= (ts > _EPS) & (y >= y0) & (y <= y1)
    t_side = np.where(ok, ts, np.inf)
    t_top = _plane(o, d, 1, y1, facing=1.0)
    px = o[0] + np.where(np.isfinite(t_top), t_top, 0) * d[:, 0] - cx
    pz = o[2] + np.where(np.isfinite(t_top), t_top, 0) * d[:, 2] - cz
    t_top = np.where(px * px + pz * pz <= r * r, t_top, np.inf)
    side = t_side <= t_top
    t = np.minimum(t_side, t_top).astype(np.float32)
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    n = np.stack([(p[:, 0] - cx) / r, np.zeros_like(t), (p[:, 2] - cz) / r], axis=1)
    n[~side] = (0.0, 1.0, 0.0)
    return t, n


class SceneGenerator:
    """Renders random rooms with furniture-like primitives and a multi-part 'person'."""

    def __init__(self, height: int = 128, width: int = 128, fov_deg: float = 60.0, noise: float = 0.02):
        self.height, self.width, self.noise = height, width, noise
        f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
        u = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / f
        v = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / f
        uu, vv = np.meshgrid(u, v)
        dirs = np.stack([uu, vv, np.ones_like(uu)], axis=-1).reshape(-1, 3)
        self._cam_dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)  # camera frame, unit
        self.focal = f

    def render(self, seed: int, index: int) -> SceneSample:
        rng = np.random.default_rng([seed, index])
        # room and camera
        half_w = rng.uniform(2.0, 3.5)
        depth_room = rng.uniform(4.5, 7.5)
        ceil = rng.uniform(2.5, 3.2)
        cam = np.array([rng.uniform(-0.6, 0.6), rng.uniform(1.2, 1.8), 0.0], dtype=np.float32)
        yaw, pitch = rng.uniform(-0.35, 0.35), rng.uniform(-0.45, -0.12)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        # camera (x right, y down, z fwd) -> world (y up): pitch about x, then yaw about y
        r_pitch = np.array([[1, 0, 0], [0, -cp, sp], [0, sp, cp]], dtype=np.float32)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=np.float32)
        cam_to_world = (r_yaw @ r_pitch).astype(np.float32)
        d = self._cam_dirs @ cam_to_world.T
        hits = _Hits(len(d))
        inst = 0

        def cast(fn, center, radius, *args):
            """Intersect only the rays inside the screen bounding box of the primitive's bounding sphere."""
            rays = self._rays_near(cam, cam_to_world, np.asarray(center, np.float32), radius)
            if rays is not None and rays.size == 0:
                return np.empty(0, np.float32), np.zeros((0, 3), np.float32), rays
            sub = d if rays is None else d[rays]
            t, n = fn(cam, sub, *args)
            return t, n, rays

        def jitter(cls):
            return np.clip(_ALBEDO[cls] * rng.uniform(0.8, 1.2, 3), 0, 1).astype(np.float32)

        # room shell
        hits.update(_plane(cam, d, 1, 0.0, 1.0), np.array([0, 1, 0], np.float32), _CLS["floor"], 0, jitter(0))
        hits.update(_plane(cam, d, 1, ceil, -1.0), np.array([0, -1, 0], np.float32), _CLS["ceiling"], 1, jitter(2))
        wall_alb = jitter(1)
        for axis, val, facing, n in (
            (0, -half_w, 1.0, (1, 0, 0)),
            (0, half_w, -1.0, (-1, 0, 0)),
            (2, depth_room, -1.0, (0, 0, -1)),
            (2, -1.5, 1.0, (0, 0, 1)),
        ):
            hits.update(_plane(cam, d, axis, val, facing), np.array(n, np.float32), _CLS["wall"], 2, wall_alb)
        inst = 3
        # rug: a patch of the floor; painting: a patch of the back wall
        p = cam + d * np.where(np.isfinite(hits.t), hits.t, 0)[:, None]
        rx, rz = rng.uniform(-1.0, 1.0), rng.uniform(2.0, depth_room - 1.5)
        rw, rd = rng.uniform(0.6, 1.4), rng.uniform(0.5, 1.2)
        on_rug = (hits.cls == _CLS["floor"]) & (np.abs(p[:, 0] - rx) < rw) & (np.abs(p[:, 2] - rz) < rd)
        hits.cls[on_rug], hits.inst[on_rug], hits.albedo[on_rug] = _CLS["rug"], inst, jitter(3)
        inst += 1
        px_, py_ = rng.uniform(-half_w + 1, half_w - 1), rng.uniform(1.2, ceil - 0.6)
        pw, ph = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.5)
        back = (hits.cls == _CLS["wall"]) & (np.abs(p[:, 2] - depth_room) < 1e-3)
        on_paint = back & (np.abs(p[:, 0] - px_) < pw) & (np.abs(p[:, 1] - py_) < ph)
        hits.cls[on_paint], hits.inst[on_paint], hits.albedo[on_paint] = _CLS["painting"], inst, jitter(4)
        inst += 1

        # free-standing objects on the floor
        for _ in range(int(rng.integers(3, 8))):
            kind = rng.choice(["ball", "cabinet", "pillar"])
            x = rng.uniform(-half_w + 0.5, half_w - 0.5)
            z = rng.uniform(1.5, depth_room - 0.5)
            alb = jitter(_CLS[kind])
            if kind == "ball":
                r = rng.uniform(0.15, 0.45)
                c = np.array([x, r, z], np.float32)
                t, n, rays = cast(_sphere, c, r, c, r)
            elif kind == "cabinet":
                half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.5)], np.float32)
                c = np.array([x, half[1], z], np.float32)
                t, n, rays = cast(_box, c, float(np.linalg.norm(half)), c, half, rng.uniform(0, np.pi))
            else:
                r, hgt = rng.uniform(0.08, 0.25), rng.uniform(0.8, 2.2)
                t, n, rays = cast(_cylinder, (x, hgt / 2, z), np.hypot(r, hgt / 2), x, z, r, 0.0, hgt)
            hits.update(t, n, _CLS[kind], inst, alb, rays=rays)
            inst += 1

        # a multi-part person: legs, torso, arms, head
        if rng.random() < 0.85:
            x = rng.uniform(-half_w + 0.8, half_w - 0.8)
            z = rng.uniform(1.8, depth_room - 0.8)
            s = rng.uniform(0.8, 1.1)  # body scale
            body_yaw = rng.uniform(0, np.pi)
            ex, ez = np.cos(body_yaw), np.sin(body_yaw)  # body's left-right axis in xz
            skin, cloth = jitter(_CLS["person"]), rng.uniform(0.1, 0.9, 3).astype(np.float32)
            leg_h, torso_h = 0.8 * s, 0.6 * s
            for side in (-1, 1):
                lx, lz = x + side * 0.1 * s * ex, z + side * 0.1 * s * ez
                t, n, rays = cast(_cylinder, (lx, leg_h / 2, lz), np.hypot(0.07 * s, leg_h / 2),
                                  lx, lz, 0.07 * s, 0.0, leg_h)
                hits.update(t, n, _CLS["person"], inst, cloth * 0.6, _PART["legs"], rays=rays)
                ax_, az_ = x + side * 0.27 * s * ex, z + side * 0.27 * s * ez
                y0, y1 = leg_h + 0.05, leg_h + torso_h
                t, n, rays = cast(_cylinder, (ax_, (y0 + y1) / 2, az_), np.hypot(0.05 * s, (y1 - y0) / 2),
                                  ax_, az_, 0.05 * s, y0, y1)
                hits.update(t, n, _CLS["person"], inst, skin, _PART["arms"], rays=rays)
            half = np.array([0.2 * s, torso_h / 2, 0.11 * s], np.float32)
            c = np.array([x, leg_h + torso_h / 2, z], np.float32)
            t, n, rays = cast(_box, c, float(np.linalg.norm(half)), c, half, -body_yaw)
            hits.update(t, n, _CLS["person"], inst, cloth, _PART["torso"], rays=rays)
            r = 0.12 * s
            c = np.array([x, leg_h + torso_h + r + 0.02, z], np.float32)
            t, n, rays = cast(_sphere, c, r, c, r)
            hits.update(t, n, _CLS["person"], inst, skin, _PART["head"], rays=rays)
            inst += 1

        return self._shade(rng, cam, d, hits, cam_to_world, ceil, depth_room)

    def _rays_near(self, cam, cam_to_world, center, radius):
        """Flat indices of the pixels whose rays can hit a sphere (conservative screen-space box), or None
        for all rays (the sphere reaches the camera plane)."""
        pc = cam_to_world.T @ (center - cam)
        z = pc[2]
        if z <= radius * 1.05:
            return None if z > -radius else np.empty(0, np.int64)
        f, h, w = self.focal, self.height, self.width
        # a sphere's image lies within angle asin(R/|p|) of its centre direction: bound it along each axis
        rad = f * radius / np.sqrt(max(z * z - radius * radius, 1e-9)) * (np.linalg.norm(pc) / z)
        u, v = f * pc[0] / z + w / 2, f * pc[1] / z + h / 2
        c0, c1 = max(int(u - rad) - 1, 0), min(int(u + rad) + 2, w)
        r0, r1 = max(int(v - rad) - 1, 0), min(int(v + rad) + 2, h)
        if c0 >= c1 or r0 >= r1:
            return np.empty(0, np.int64)
        rows = np.arange(r0, r1)[:, None] * w
        return (rows + np.arange(c0, c1)[None, :]).ravel()

    def _shade(self, rng, cam, d, hits, cam_to_world, ceil, depth_room) -> SceneSample:
        h, w = self.height, self.width
        t = np.where(np.isfinite(hits.t), hits.t, 0).astype(np.float32)
        p = cam + d * t[:, None]
        n = hits.normal / np.maximum(np.linalg.norm(hits.normal, axis=1, keepdims=True), 1e-6)
        facing = np.einsum("ij,ij->i", n, d)
        n = np.where(facing[:, None] > 0, -n, n)
        light = np.array([rng.uniform(-1.5, 1.5), ceil - 0.2, rng.uniform(1.0, depth_room - 1.0)], np.float32)
        to_l = light - p
        dist = np.linalg.norm(to_l, axis=1, keepdims=True)
        lam = np.clip(np.einsum("ij,ij->i", n, to_l / np.maximum(dist, 1e-6)), 0, None)
        falloff = 1.0 / (1.0 + 0.08 * dist[:, 0] ** 2)
        # procedural texture on world coordinates: checker floor, stripes on walls, bands on objects
        tex = np.ones_like(t)
        floor = hits.cls == _CLS["floor"]
        tex[floor] = 0.85 + 0.15 * ((np.floor(p[floor, 0] * 2) + np.floor(p[floor, 2] * 2)) % 2)
        wall = hits.cls == _CLS["wall"]
        tex[wall] = 0.92 + 0.08 * np.sin(p[wall, 1] * 12.0)
        rug = hits.cls == _CLS["rug"]
        tex[rug] = 0.75 + 0.25 * np.sin(p[rug, 0] * 20.0) * np.sin(p[rug, 2] * 20.0)
        obj = hits.cls >= _CLS["ball"]
        tex[obj] = 0.9 + 0.1 * np.sin(p[obj, 1] * 25.0 + hits.inst[obj])
        shade = (0.25 + 0.9 * lam * falloff) * tex
        rgb = hits.albedo * shade[:, None] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
        rgb = rgb + rng.normal(0.0, self.noise, rgb.shape).astype(np.float32)
        image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)

        world_to_cam = cam_to_world.T
        normals = (n @ world_to_cam.T).reshape(h, w, 3).astype(np.float32)
        depth = (t * self._cam_dirs[:, 2]).reshape(h, w).astype(np.float32)
        semseg = hits.cls.reshape(h, w).astype(np.uint8)
        ident = (hits.cls.astype(np.int32) * 4096 + hits.inst).reshape(h, w)
        edge = np.zeros((h, w), dtype=bool)
        edge[:, :-1] |= ident[:, :-1] != ident[:, 1:]
        edge[:-1, :] |= ident[:-1, :] != ident[1:, :]
        from skimage.morphology import thin

        edge = thin(edge).astype(np.uint8)  # one pixel thin, 8-connected (BSDS-style labels, not staircases)
        saliency = (semseg >= _CLS["ball"]).astype(np.uint8)
        parts = hits.part.reshape(h, w).astype(np.uint8)
        return SceneSample(image, semseg, depth, normals, edge, saliency, parts)
