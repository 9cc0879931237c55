"""The phantom's anatomy: label values, tissue HU, and the procedural rendering of each structure.

Private to :mod:`dinomix_core.data.phantom`, which owns the public API (sizes, cases, data sets).
Arrays are (z, y, x) voxels; sizes and radii are in mm unless a name says otherwise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from dinomix_core.data import _phantom_shapes as shp

if TYPE_CHECKING:
    from dinomix_core.data.phantom import PhantomSize

# BTCV-13 label values (the order of the Synapse multi-organ challenge).
SPLEEN, R_KIDNEY, L_KIDNEY, GALLBLADDER, ESOPHAGUS, LIVER, STOMACH = 1, 2, 3, 4, 5, 6, 7
AORTA, IVC, PORTAL_SPLENIC, PANCREAS, R_ADRENAL, L_ADRENAL = 8, 9, 10, 11, 12, 13
NUM_CLASSES = 14

# Non-contrast HU and the enhancement at full portal-venous contrast (c = 1).
_HU = {
    "fat": (-100.0, 0.0),
    "visceral_fat": (-92.0, 0.0),
    "muscle": (48.0, 12.0),
    "liver": (56.0, 55.0),
    "hepatic_vein": (40.0, 120.0),
    "spleen": (48.0, 65.0),
    "kidney": (35.0, 125.0),
    "renal_sinus": (-60.0, 0.0),
    "gallbladder": (12.0, 0.0),
    "esophagus": (42.0, 25.0),
    "stomach_wall": (44.0, 35.0),
    "stomach_fluid": (14.0, 0.0),
    "pancreas": (40.0, 55.0),
    "artery": (42.0, 140.0),
    "vein": (40.0, 115.0),
    "portal": (42.0, 140.0),
    "adrenal": (28.0, 35.0),
    "bowel_wall": (36.0, 35.0),
    "bowel_fluid": (18.0, 0.0),
    "cortical_bone": (800.0, 0.0),
    "cancellous_bone": (230.0, 0.0),
    "posterior_bone": (480.0, 0.0),
    "disc": (90.0, 0.0),
    "csf": (15.0, 0.0),
    "rib": (520.0, 0.0),
    "gas": (-990.0, 0.0),
}


class _Canvas:
    """Image and label arrays plus the per-voxel *phantom coordinates* (mm).

    Anatomy is described in an ideal patient frame q (x, y, z in mm, LPS). A voxel at world
    position p shows the anatomy at q = R p + d(p) - t: R is a small axial rotation (patient
    positioning), d a smooth random deformation field and t a translation (scan range and
    table position). Every structure is evaluated on q, so all of them deform together.
    """

    def __init__(self, grid: PhantomSize, rng: np.random.Generator):
        self.grid = grid
        self.axes_mm = tuple((np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(grid.shape_zyx, grid.spacing_zyx))
        self.origin_xyz = (float(self.axes_mm[2][0]), float(self.axes_mm[1][0]), float(self.axes_mm[0][0]))
        self.yaw = float(rng.uniform(-6.0, 6.0))
        self.shift = np.array([rng.uniform(-8, 8), rng.uniform(-6, 6), rng.uniform(-10, 10)])
        amp = float(rng.uniform(3.0, 5.0))
        disp = amp * shp.smooth_field(rng, self.axes_mm, grid.half_extent_mm, 56.0, count=3)
        self.margin = float(np.abs(disp).max()) + 2.0 * max(grid.spacing_zyx)
        rot = shp.rotation_matrix(self.yaw)
        self.rot = rot
        pz, py, px = np.meshgrid(*self.axes_mm, indexing="ij", sparse=True)
        self.qx = (rot[0, 0] * px + rot[0, 1] * py + disp[0] - self.shift[0]).astype(np.float32)
        self.qy = (rot[1, 0] * px + rot[1, 1] * py + disp[1] - self.shift[1]).astype(np.float32)
        self.qz = (np.broadcast_to(pz, disp[2].shape) + disp[2] - self.shift[2]).astype(np.float32)
        self.image = np.full(grid.shape_zyx, _HU["gas"][0] - 10.0, dtype=np.float32)
        self.labels = np.zeros(grid.shape_zyx, dtype=np.uint8)

    def box(self, lo_xyz, hi_xyz) -> tuple[slice, slice, slice]:
        """Index slices (z, y, x) of every voxel whose q can fall in the q-space box."""
        lo = np.asarray(lo_xyz, float) + self.shift - self.margin
        hi = np.asarray(hi_xyz, float) + self.shift + self.margin
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        world = corners @ self.rot  # rows: R^T applied to each corner
        wlo, whi = world.min(axis=0), world.max(axis=0)
        slices = []
        for axis_zyx, axis_xyz in ((0, 2), (1, 1), (2, 0)):
            ax = self.axes_mm[axis_zyx]
            i0 = int(np.searchsorted(ax, wlo[axis_xyz], side="left"))
            i1 = int(np.searchsorted(ax, whi[axis_xyz], side="right"))
            slices.append(slice(max(i0, 0), min(max(i1, i0), len(ax))))
        return tuple(slices)

    def q(self, sl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.qx[sl], self.qy[sl], self.qz[sl]

    def paint(self, sl, mask: np.ndarray, hu, label: int | None) -> None:
        """Write ``hu`` (scalar or array over the box) where ``mask``; set the label unless None."""
        region = self.image[sl]
        region[mask] = hu if np.isscalar(hu) else hu[mask]
        if label is not None:
            self.labels[sl][mask] = label


class _Intensities:
    """Per-case HU of every tissue: base + contrast enhancement + global and tissue jitter."""

    def __init__(self, rng: np.random.Generator):
        contrast = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.4, 1.0))
        offset = float(rng.normal(0.0, 4.0))
        self.contrast = contrast
        self.values = {}
        for name, (base, enhancement) in _HU.items():
            # Soft tissue varies by a few HU between patients, bone by tens, air hardly at all.
            spread = 10.0 if name == "gas" else (40.0 if base > 200 else 5.0)
            self.values[name] = base + enhancement * contrast + offset + float(rng.normal(0.0, spread))

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _render(cv: _Canvas, hu: _Intensities, tex: np.ndarray, rng: np.random.Generator) -> None:
    """Paint every structure in priority order (later structures cover earlier ones)."""
    # Body habitus: abdominal cavity size, muscle wall and subcutaneous fat thickness.
    kx, ky = _u(rng, 0.92, 1.07), _u(rng, 0.9, 1.08)
    cav = np.array([124.0 * kx, 82.0 * ky])
    wall = _u(rng, 10.0, 16.0)
    fat = _u(rng, 8.0, 30.0)
    body_phase = _u(rng, 0, 2 * math.pi)
    yc = _u(rng, -4.0, 4.0)  # antero-posterior centre of the body in q

    def P(x, y, z):  # nominal anatomy position -> this patient's q position
        return np.array([x * kx, y * ky, z])

    full = (slice(None),) * 3
    qx, qy, qz = cv.q(full)
    zmod = (1.0 + 0.04 * np.sin(2 * math.pi * qz / 320.0 + body_phase)).astype(np.float32)
    r_body = shp.superellipse(qx, qy, (0.0, yc), ((cav[0] + wall + fat) * zmod, (cav[1] + wall + fat) * zmod), 2.3)
    r_wall = shp.superellipse(qx, qy, (0.0, yc), ((cav[0] + wall) * zmod, (cav[1] + wall) * zmod), 2.3)
    r_cav = shp.superellipse(qx, qy, (0.0, yc), (cav[0] * zmod, cav[1] * zmod), 2.3)
    cavity = r_cav < 1
    t0 = tex[0]
    cv.paint(full, r_body < 1, hu["fat"] + 8 * t0, 0)
    cv.paint(full, r_wall < 1, hu["muscle"] + 5 * t0, 0)
    cv.paint(full, cavity, hu["visceral_fat"] + 8 * t0, 0)

    # Back muscles: paraspinal (in the posterior wall) and psoas (lower abdomen, beside the spine).
    yv = 47.0 * ky + yc  # vertebral body centre
    for side in (-1, 1):
        sl = cv.box((side * 38 - 40, yv + 10, -200), (side * 38 + 40, yv + 90, 200))
        x, y, z = cv.q(sl)
        cv.paint(sl, shp.ellipsoid(x, y, z, (side * 36 * kx, yv + 46, 0), (28, 22, 1e4)) < 1, hu["muscle"] + 5 * t0[sl], 0)
        psoas_top = _u(rng, -10, 10)
        sl = cv.box((side * 40 - 40, yv - 40, -200), (side * 40 + 40, yv + 40, psoas_top))
        x, y, z = cv.q(sl)
        radius = np.clip(6.0 + 0.2 * (psoas_top - z), 0.0, 24.0)
        psoas = (np.hypot(x - side * 38 * kx, (y - yv - 4) * 1.1) < radius) & (z < psoas_top)
        cv.paint(sl, psoas, hu["muscle"] + 5 * t0[sl], 0)

    _render_bowel(cv, hu, tex, rng, P, cavity)
    _render_organs(cv, hu, tex, rng, P, cavity)
    _render_skeleton(cv, hu, tex, rng, yv, r_cav, r_wall, yc)


def _render_bowel(cv, hu, tex, rng, P, cavity) -> None:
    """Unlabelled context: small-bowel loops, colon and duodenum, with gas and fluid."""
    t0, t1 = tex[0], tex[1]
    full = (slice(None),) * 3
    _, qy, qz = cv.q(full)
    loops = shp.smooth_field(rng, cv.axes_mm, cv.grid.half_extent_mm, 16.0, count=1)[0]
    sb_top = _u(rng, -25.0, 0.0)
    region = cavity & (qz < sb_top) & (qy < 45.0)
    wall = region & (np.abs(loops) < 0.45)
    lumen = region & (np.abs(loops) < 0.2)
    cv.paint(full, wall, hu["bowel_wall"] + 6 * t0, 0)
    cv.paint(full, lumen, np.where(t1 > 1.4, hu["gas"], hu["bowel_fluid"] + 10 * t0), 0)

    colon_r = _u(rng, 17.0, 25.0)
    colon = np.array(
        [P(-92, 5, -140), P(-95, -5, -60), P(-88, -35, -5), P(-40, -68, -15), P(20, -70, -10), P(80, -40, 15),
         P(96, -5, -20), P(94, 5, -140)]
    )
    _paint_hollow(cv, colon, np.full(len(colon), colon_r), (1, 1, 1), hu["bowel_wall"], hu, tex, gas_frac=0.55)
    duod = np.array([P(-25, -38, 22), P(-48, -25, 14), P(-55, -8, -8), P(-36, -2, -28), P(-4, -4, -32), P(22, 2, -22)])
    _paint_hollow(cv, duod, np.full(len(duod), _u(rng, 10.0, 13.0)), (1, 1, 1), hu["bowel_wall"], hu, tex, gas_frac=0.15)


def _paint_hollow(cv, path, radii, scale, wall_hu, hu, tex, gas_frac: float, label: int = 0) -> None:
    """A tube with a 3 mm wall, mottled content and gas where the content texture is high."""
    lo, hi = shp.path_bounds(path, radii)
    sl = cv.box(lo, hi)
    x, y, z = cv.q(sl)
    q, inner = shp.tube(x, y, z, path, radii, scale, wall=3.0)
    t0, t1 = tex[0][sl], tex[1][sl]
    cv.paint(sl, q < 1, wall_hu + 5 * t0, label)
    lumen = inner < 1
    if not lumen.any():
        return
    # Gas fills the lumen where the content texture is in its top ``gas_frac`` quantile.
    threshold = float(np.quantile(t1[lumen], 1.0 - gas_frac))
    content = np.where(t1 > threshold, hu["gas"], hu["bowel_fluid"] + 12 * t0)
    cv.paint(sl, lumen, content, label)


def _render_organs(cv, hu, tex, rng, P, cavity) -> None:
    """The 13 labelled organs, in an order where small structures are painted last."""
    t0 = tex[0]
    org = _u(rng, 0.92, 1.08)  # overall organ size of this patient

    def J(sd=5.0):  # position jitter of one organ, (x, y, z) mm
        return rng.normal(0.0, sd, 3)

    def R(sd=8.0, base=(0.0, 0.0, 0.0)):
        return shp.rotation_matrix(*(b + rng.normal(0.0, sd) for b in base))

    def ell_box(center, radii):
        r = float(max(radii))
        return cv.box(np.asarray(center) - r, np.asarray(center) + r)

    # Liver (6): right lobe + left lobe, kept inside the cavity, with a fat pad spared behind
    # it for the IVC and the right adrenal gland. Hepatic veins inside are still "liver".
    s = org * _u(rng, 0.9, 1.1)
    c_right = P(-66, 2, 48) + J()
    r_right = np.array([66, 74, 62]) * s
    rot_right = R(6.0, (12.0, 0.0, 0.0))
    c_left = P(6, -46, 74) + J()
    r_left = np.array([44, 27, 30]) * s * _u(rng, 0.85, 1.15)
    rot_left = R(6.0)
    c_pad = P(-32, 44, 52) + J(3.0)
    lo = np.minimum(c_right - r_right.max(), c_left - r_left.max())
    hi = np.maximum(c_right + r_right.max(), c_left + r_left.max())
    sl = cv.box(lo, hi)
    x, y, z = cv.q(sl)
    liver = (shp.ellipsoid(x, y, z, c_right, r_right, rot_right) < 1) | (shp.ellipsoid(x, y, z, c_left, r_left, rot_left) < 1)
    liver &= cavity[sl] & (shp.ellipsoid(x, y, z, c_pad, (24, 26, 42)) > 1)
    cv.paint(sl, liver, hu["liver"] + 4 * t0[sl], LIVER)
    top = c_right + np.array([44, 6, 50])
    for end in (P(-120, -5, 70), P(-62, -62, 95), P(8, -42, 90)):
        path = np.array([top, (top + end) / 2 + J(4.0), end])
        radii = np.array([6.0, 4.0, 2.5])
        lo_v, hi_v = shp.path_bounds(path, radii)
        slv = cv.box(lo_v, hi_v)
        xv, yv_, zv = cv.q(slv)
        vein = (shp.tube(xv, yv_, zv, path, radii) < 1) & (cv.labels[slv] == LIVER)
        cv.paint(slv, vein, hu["hepatic_vein"], None)

    # Spleen (1): a crescent along the left postero-lateral wall.
    s = org * _u(rng, 0.85, 1.2)
    c = P(86, 36, 52) + J()
    radii = np.array([23, 50, 46]) * s
    yaw = 38.0 + rng.normal(0, 6)
    rot = shp.rotation_matrix(yaw, rng.normal(0, 6), rng.normal(0, 6))
    hollow = c + rot @ np.array([-26.0 * s, 0.0, 0.0])
    sl = ell_box(c, radii)
    x, y, z = cv.q(sl)
    spleen = (shp.ellipsoid(x, y, z, c, radii, rot) < 1) & (shp.ellipsoid(x, y, z, hollow, radii * (1.0, 0.8, 0.8), rot) > 1)
    cv.paint(sl, spleen & cavity[sl], hu["spleen"] + 4 * t0[sl], SPLEEN)

    # Esophagus (5): a flattened tube in the upper slices, joining the stomach's cardia.
    eso = np.array([P(0, 20, 150), P(4, 16, 112), P(18, 10, 90), P(36, 5, 78)]) + J(3.0)
    eso_r = np.full(len(eso), 10.0 * _u(rng, 0.9, 1.1))
    _paint_tube(cv, eso, eso_r, (1, 0.75, 1), hu["esophagus"] + 4 * t0, ESOPHAGUS, cavity)
    if rng.random() < 0.5:  # swallowed air in the lumen of some cases
        _paint_tube(cv, eso, eso_r * 0.3, (1, 0.75, 1), hu["gas"], ESOPHAGUS, cavity)

    # Stomach (7): J-shaped from fundus to pylorus; wall, fluid, and gas on top (anterior,
    # the patient lies supine) above an air-fluid level.
    s = _u(rng, 0.8, 1.2)
    st = np.array([P(52, 14, 100), P(60, -14, 76), P(50, -40, 52), P(26, -54, 32), P(-4, -50, 22), P(-24, -38, 22)]) + J(4.0)
    st_r = np.array([28.0, 26.0, 22.0, 18.0, 14.0, 10.0]) * s
    lo, hi = shp.path_bounds(st, st_r)
    sl = cv.box(lo, hi)
    x, y, z = cv.q(sl)
    q_outer, q_lumen = shp.tube(x, y, z, st, st_r, wall=4.0)
    outer = (q_outer < 1) & cavity[sl]
    lumen = outer & (q_lumen < 1)
    cv.paint(sl, outer, hu["stomach_wall"] + 4 * t0[sl], STOMACH)
    gas_share = _u(rng, 0.1, 0.45)  # drawn unconditionally: the random stream must not depend on the grid
    level = float(np.quantile(y[lumen], gas_share)) if lumen.any() else -np.inf
    content = np.where(y < level, hu["gas"], hu["stomach_fluid"] + 10 * tex[1][sl])
    cv.paint(sl, lumen, content, STOMACH)

    # Kidneys (2 right, 3 left): bean shapes, upper poles tilted medially, renal sinus fat at
    # the hilum. The right kidney sits lower (under the liver).
    kidneys = {}
    for label, side, zc in ((R_KIDNEY, -1, -6.0), (L_KIDNEY, 1, 8.0)):
        s = org * _u(rng, 0.9, 1.1)
        c = P(side * 62, 50, zc) + J()
        radii = np.array([25.0, 23.0, 50.0]) * s
        rot = shp.rotation_matrix(side * -28.0 + rng.normal(0, 6), side * 14.0 + rng.normal(0, 4), rng.normal(0, 4))
        sinus = c + rot @ np.array([-side * 19.0 * s, -6.0 * s, 0.0])
        sl = ell_box(c, radii)
        x, y, z = cv.q(sl)
        kidney = shp.ellipsoid(x, y, z, c, radii, rot) < 1
        sinus_m = kidney & (shp.ellipsoid(x, y, z, sinus, radii * (0.45, 0.42, 0.42), rot) < 1)
        cv.paint(sl, kidney, hu["kidney"] + 8 * t0[sl], label)
        cv.paint(sl, sinus_m, hu["renal_sinus"] + 10 * t0[sl], 0)
        kidneys[label] = (c, radii, rot)

    # Gallbladder (4): a pear in the liver's gallbladder fossa, fundus antero-inferior.
    s = _u(rng, 0.75, 1.3)
    c = P(-45, -40, 6) + J()
    radii = np.array([13.0, 13.0, 28.0]) * s
    sl = ell_box(c, radii)
    x, y, z = cv.q(sl)
    gb = (shp.ellipsoid(x, y, z, c, radii, R(8.0, (0.0, 0.0, -25.0))) < 1) & cavity[sl]
    cv.paint(sl, gb, hu["gallbladder"] + 3 * t0[sl], GALLBLADDER)

    # Pancreas (11): flattened, lobulated band from the head (right, in the duodenal C-loop)
    # across the midline to the tail at the splenic hilum.
    s = org * _u(rng, 0.85, 1.15)
    pa = np.array([P(-32, -12, -4), P(-20, -18, 10), P(0, -22, 18), P(30, -12, 25), P(58, 6, 32), P(74, 18, 38)]) + J(3.0)
    pa_r = np.array([15.0, 13.0, 11.0, 11.0, 9.0, 7.0]) * s
    lobules = hu["pancreas"] + 10 * t0 - 25 * np.clip(tex[1] - 1.0, 0.0, None)
    _paint_tube(cv, pa, pa_r, (1, 0.65, 1), lobules, PANCREAS, cavity)

    # Vessels: IVC (9) right of the midline, aorta (8) left, iliac arteries below the
    # bifurcation (unlabelled), portal & splenic vein (10) behind the pancreas into the liver.
    ivc = np.array([P(-22, 14, -150), P(-24, 14, -20), P(-26, 10, 60), P(-20, 6, 150)]) + J(2.0)
    _paint_tube(cv, ivc, np.full(4, 11.0 * _u(rng, 0.85, 1.15)), (1, 0.7, 1), hu["vein"] + 3 * t0, IVC, None)
    ao = np.array([P(24, 30, 150), P(16, 20, 70), P(10, 14, 0), P(8, 12, -82)]) + J(2.0)
    ao_r = np.array([11.5, 11.0, 10.0, 9.0]) * _u(rng, 0.9, 1.1)
    _paint_tube(cv, ao, ao_r, (1, 1, 1), hu["artery"] + 3 * t0, AORTA, None)
    for side in (-1, 1):
        iliac = np.array([ao[-1], ao[-1] + np.array([side * 22.0, 8.0, -30.0]), ao[-1] + np.array([side * 40.0, 16.0, -80.0])])
        _paint_tube(cv, iliac, np.array([7.0, 6.5, 6.0]), (1, 1, 1), hu["artery"], 0, None)
    pv = np.array([P(78, 26, 46), P(46, 8, 30), P(10, -5, 22), P(-14, -5, 30), P(-40, 0, 46)]) + J(2.5)
    pv_r = np.array([5.0, 5.5, 6.5, 7.0, 6.5]) * _u(rng, 0.85, 1.15)
    _paint_tube(cv, pv, pv_r, (1, 1, 1), hu["portal"] + 3 * t0, PORTAL_SPLENIC, None)

    # Adrenal glands (12 right, 13 left): thin inverted-Y shapes above and medial to the
    # kidneys' upper poles; right one behind the IVC, left one beside the aorta.
    for label, side, nominal in ((R_ADRENAL, -1, P(-34, 40, 56)), (L_ADRENAL, 1, P(32, 34, 44))):
        s = _u(rng, 0.9, 1.1)
        c = nominal + J(2.5)
        body_r = np.array([4.5, 7.0, 12.0]) * s
        limb_r = np.array([3.8, 13.0, 15.0]) * s
        sl = ell_box(c, limb_r + 12.0)
        x, y, z = cv.q(sl)
        gland = shp.ellipsoid(x, y, z, c, body_r) < 1
        for splay in (-25.0, 25.0):
            rot = shp.rotation_matrix(side * splay + rng.normal(0, 5), 0.0, rng.normal(0, 5))
            gland |= shp.ellipsoid(x, y, z, c + rot @ np.array([0.0, 9.0 * s, -4.0]), limb_r, rot) < 1
        cv.paint(sl, gland, hu["adrenal"] + 4 * t0[sl], label)


def _paint_tube(cv, path, radii, scale, hu_value, label, clip_mask) -> None:
    lo, hi = shp.path_bounds(path, radii)
    sl = cv.box(lo, hi)
    x, y, z = cv.q(sl)
    mask = shp.tube(x, y, z, path, radii, scale) < 1
    if clip_mask is not None:
        mask &= clip_mask[sl]
    cv.paint(sl, mask, hu_value if np.isscalar(hu_value) else hu_value[sl], label)


def _render_skeleton(cv, hu, tex, rng, yv, r_cav, r_wall, yc) -> None:
    """Spine (vertebral bodies, discs, canal, posterior elements) and ribs; never labelled."""
    t0 = tex[0]
    period = _u(rng, 30.0, 36.0)
    phase = _u(rng, 0.0, period)
    disc_h = _u(rng, 6.0, 9.0)
    sl = cv.box((-60, yv - 40, -200), (60, yv + 70, 200))
    x, y, z = cv.q(sl)
    in_disc = np.mod(z - phase, period) < disc_h
    vb = shp.ellipsoid(x, y, z, (0.0, yv, 0.0), (22.0, 18.0, 1e4))
    cv.paint(sl, (vb < 1) & in_disc, hu["disc"] + 5 * t0[sl], 0)
    bone = (vb < 1) & ~in_disc
    cv.paint(sl, bone, np.where(vb > 0.82, hu["cortical_bone"], hu["cancellous_bone"] + 30 * t0[sl]), 0)
    canal_c = (0.0, yv + 28.0)
    ring = np.hypot(x - canal_c[0], y - canal_c[1])
    spinous = shp.ellipsoid(x, y, z, (0.0, yv + 50.0, 0.0), (5.5, 15.0, 1e4)) < 1
    transverse = (shp.ellipsoid(x, y, z, (0.0, yv + 24.0, 0.0), (34.0, 5.5, 1e4)) < 1) & ~in_disc
    posterior = ((ring < 15.0) | spinous | transverse) & ~((vb < 1))
    cv.paint(sl, posterior & ~in_disc, hu["posterior_bone"] + 40 * t0[sl], 0)
    cv.paint(sl, ring < 9.0, hu["csf"] + 5 * t0[sl], 0)

    # Ribs: oblique bands inside the muscle wall of the upper abdomen, lateral and posterior.
    rib_start = _u(rng, -20.0, 10.0)
    rib_period = _u(rng, 26.0, 32.0)
    full = (slice(None),) * 3
    qx, qy, qz = cv.q(full)
    angle = np.degrees(np.abs(np.arctan2(qx, -(qy - yc))))
    layer = (r_cav > 1.0) & (r_wall < 0.97) & (angle > 40.0) & (angle < 155.0) & (qz > rib_start)
    ribs = layer & (np.mod(qz - 0.6 * angle, rib_period) < 0.3 * rib_period)
    cv.paint(full, ribs, hu["rib"] + 60 * t0, 0)
