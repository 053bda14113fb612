"""CrystalNN's neighbours of one site, computed without most of its per-site overhead.

pymatgen's ``CrystalNN()`` (default settings: solid-angle Voronoi weights, porous
adjustment, electronegativity weight 3.0, distance cutoffs (0.5, 1) A, search radius 7 A)
is what CrystaLLM's bond-length check uses, and most of a validation's time. For every
site it builds PeriodicNeighbor objects for every atom within 7 A, tessellates all of them
(about 100 points for a perovskite, 250 for a carbon cell), walks every ridge of the
tessellation in Python and looks each neighbour's image up again.

:meth:`NeighbourFinder.neighbours` gives the same neighbour set from the same definition:

- The Voronoi cell of the site only depends on atoms closer than twice its farthest
  vertex. The tessellation first runs on the nearest atoms (a sphere holding about
  :data:`FIRST_POINTS` of them); when the site's cell is closed and no atom left out lies
  within twice its farthest vertex, no farther atom can cut it, so the cell is the one
  CrystalNN's tessellation of every atom within 7 A gives. When some may, it runs again
  on the atoms within that distance (more atoms only shrink the cell, so that is enough),
  and on every atom within 7 A -- exactly CrystalNN's input -- when that is no smaller.
- Face solid angles, areas and the weights (solid angle over the largest, times solid
  angle over area, times ``1 + 3 sqrt(|dX| / 3.3)``, renormalised, times the smooth
  distance cutoff over pymatgen's own radii, rounded to 3 decimals) are computed for all
  faces at once with NumPy, and the coordination number is the one whose share of the
  unit semicircle is largest, as in CrystalNN (its own ``_semicircle_integral``).

Anything unusual (a cell that stays open, a qhull error, a non-finite weight, disordered
or oxidation-decorated sites) falls back to ``CrystalNN().get_nn_info`` itself, so the
answer is never less faithful than the original. ``tests/test_validation_speed.py``
compares the two over real benchmark structures and generated candidates.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

#: CrystalNN's defaults, which CrystaLLM's check uses
SEARCH_CUTOFF = 7.0
DISTANCE_CUTOFFS = (0.5, 1.0)
X_DIFF_WEIGHT = 3.0
#: first try: a sphere that holds about this many atoms
FIRST_POINTS = 24
#: margin (A) by which the cell must stay inside the first try's reach
REACH_MARGIN = 1e-6


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross products of two (n, 3) arrays (``np.cross`` without its axis handling)."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def _crystalnn_fallback(structure, index: int) -> list[tuple[int, np.ndarray]]:
    from pymatgen.analysis.local_env import CrystalNN

    return [(int(n["site_index"]), np.asarray(n["site"].frac_coords, dtype=float))
            for n in CrystalNN().get_nn_info(structure, index)]


class NeighbourFinder:
    """CrystalNN neighbours of the sites of one structure (per-structure data computed once)."""

    def __init__(self, structure) -> None:
        self.structure = structure
        self.lattice = structure.lattice
        self.frac = structure.frac_coords
        self.volume_per_atom = float(structure.lattice.volume) / max(len(structure), 1)
        self.simple = all(site.is_ordered and type(site.specie).__name__ == "Element" for site in structure)
        self._per_site: dict[str, Any] | None = None

    def _site_data(self) -> dict[str, Any]:
        if self._per_site is None:
            from pymatgen.core.local_env import _get_default_radius, _get_radius

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sites = list(self.structure)
                x = np.array([float(site.specie.X) for site in sites])
                radius = np.array([float(_get_radius(site)) for site in sites])
                default = np.array([float(_get_default_radius(site)) for site in sites])
            self._per_site = {"x": x, "radius": radius, "default": default}
        return self._per_site

    def neighbours(self, index: int) -> list[tuple[int, np.ndarray]]:
        """Return ``(site index, fractional coordinates of the neighbour's image)`` for the
        neighbours ``CrystalNN().get_nn_info(structure, index)`` gives."""
        if not self.simple:
            return _crystalnn_fallback(self.structure, index)
        try:
            found = self._neighbours(index)
        except Exception:  # noqa: BLE001 - e.g. qhull refusing the points: let CrystalNN decide
            found = None
        return _crystalnn_fallback(self.structure, index) if found is None else found

    def _cell(self, index: int):
        """Return the tessellation inputs and faces of the site's Voronoi cell, or None."""
        from scipy.spatial import Voronoi

        center = self.structure[index].coords
        fcoords, dists, indices, _ = self.lattice.get_points_in_sphere(self.frac, center, SEARCH_CUTOFF,
                                                                       zip_results=False)
        if len(dists) < 5:
            return None
        order = np.argsort(dists, kind="stable")
        fcoords, dists, indices = fcoords[order], dists[order], indices[order]
        if dists[0] > 1e-8 or (len(dists) > 1 and dists[1] <= 1e-8):
            return None  # the site must be the one point at the centre
        coords = self.lattice.get_cartesian_coords(fcoords)
        total = len(dists)
        # first try: about FIRST_POINTS atoms, by the cell's density
        radius = (FIRST_POINTS * self.volume_per_atom * 3 / (4 * math.pi)) ** (1 / 3)
        count = int(np.searchsorted(dists, radius, side="right"))
        for attempt in range(4):
            if count >= total - 1 or count < 5 or attempt == 3:
                count, radius = total, SEARCH_CUTOFF
            points = coords[:count]
            voro = Voronoi(points)
            pairs = voro.ridge_points
            mine = np.nonzero((pairs[:, 0] == 0) | (pairs[:, 1] == 0))[0]
            faces = [voro.ridge_vertices[k] for k in mine]
            closed = bool(faces) and not any(-1 in face for face in faces)
            if count == total:
                if not closed:
                    return None  # open cell: CrystalNN widens its search; let it
                break
            if not closed:
                count = total
                continue
            used = np.unique(np.concatenate([np.asarray(face) for face in faces]))
            reach = 2 * float(np.max(np.linalg.norm(voro.vertices[used] - points[0], axis=1))) + REACH_MARGIN
            # the atoms left out lie beyond ``radius``; when none is within twice the cell's
            # reach, none can cut the cell, so it is the full tessellation's cell
            if reach <= radius:
                break
            # more atoms only shrink the cell, so this radius is enough on the next try
            radius = reach
            count = int(np.searchsorted(dists, radius, side="right"))
        others = np.where(pairs[mine, 0] == 0, pairs[mine, 1], pairs[mine, 0])
        return points, voro.vertices, faces, others, indices[:count], fcoords[:count]

    def _neighbours(self, index: int) -> list[tuple[int, np.ndarray]] | None:
        from pymatgen.analysis.local_env import CrystalNN

        cell = self._cell(index)
        if cell is None:
            return None
        points, vertices, faces, others, indices, fcoords = cell
        center = points[0]
        # fan triangles (v0, v_i, v_i+1) of every face, in order
        tri_face, tri_a, tri_b, tri_c = [], [], [], []
        for number, face in enumerate(faces):
            for i in range(1, len(face) - 1):
                tri_face.append(number)
                tri_a.append(face[0])
                tri_b.append(face[i])
                tri_c.append(face[i + 1])
        tri_face = np.asarray(tri_face)
        d0, di, dj = (vertices[np.asarray(t)] - center for t in (tri_a, tri_b, tri_c))
        r0, ri, rj = (np.sqrt(np.einsum("ij,ij->i", d, d)) for d in (d0, di, dj))
        tp = np.abs(np.einsum("ij,ij->i", d0, _cross(di, dj)))
        de = (r0 * ri * rj + rj * np.einsum("ij,ij->i", d0, di) + ri * np.einsum("ij,ij->i", d0, dj)
              + r0 * np.einsum("ij,ij->i", di, dj))
        with np.errstate(divide="ignore", invalid="ignore"):
            angle = np.where(de == 0, np.where(tp > 0, 0.5 * math.pi, -0.5 * math.pi), np.arctan(tp / de))
        angle = np.where(angle > 0, angle, angle + math.pi) * 2
        corner = vertices[np.asarray(tri_c)]
        volume = np.abs(np.einsum("ij,ij->i", center - corner, _cross(vertices[np.asarray(tri_a)] - corner,
                                                                      vertices[np.asarray(tri_b)] - corner))) / 6
        solid = np.zeros(len(faces))
        vol = np.zeros(len(faces))
        np.add.at(solid, tri_face, angle)
        np.add.at(vol, tri_face, volume)
        other_coords = points[others]
        area = 3 * vol / (np.sqrt(np.einsum("ij,ij->i", other_coords - center, other_coords - center)) / 2)
        # CrystalNN measures the distance cutoffs from the site as stored, not its image at the centre
        apart = other_coords - self.structure[index].coords
        distance = np.sqrt(np.einsum("ij,ij->i", apart, apart))
        keep = solid > 0
        if not keep.any():
            return None
        data = self._site_data()
        site_index = indices[others]
        weight = solid / solid.max()
        weight = weight * (solid / area)
        x_own, x_other = data["x"][index], data["x"][site_index]
        with np.errstate(invalid="ignore"):
            chemical = 1 + X_DIFF_WEIGHT * np.sqrt(np.abs(x_own - x_other) / 3.3)
        chemical = np.where(np.isnan(x_other) | math.isnan(x_own), 1.0, chemical)
        weight = (weight * chemical)[keep]
        site_index, distance, face_coords = site_index[keep], distance[keep], fcoords[others][keep]
        if not np.all(np.isfinite(weight)) or weight.max() <= 0:
            return None
        weight = weight / weight.max()
        r_own, r_other = data["radius"][index], data["radius"][site_index]
        diameter = np.where((r_own > 0) & (r_other > 0), r_own + r_other,
                            data["default"][index] + data["default"][site_index])
        low, high = diameter + DISTANCE_CUTOFFS[0], diameter + DISTANCE_CUTOFFS[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            smooth = (np.cos((distance - low) / (high - low) * math.pi) + 1) * 0.5
        weight = weight * np.where(distance <= low, 1.0, np.where(distance < high, smooth, 0.0))
        if not np.all(np.isfinite(weight)):
            return None
        if weight.max() == 0:
            return []
        weight = np.round(weight, 3)
        bins = sorted({float(w) for w in weight if w > 0}, reverse=True) + [0.0]
        best_cn, best_weight, best_bin = None, -math.inf, None
        total = 0.0
        cn_weights: list[tuple[int, float, float]] = []
        for number, value in enumerate(bins[:-1]):
            share = CrystalNN._semicircle_integral(bins, number)
            cn_weights.append((int(np.count_nonzero(weight >= value)), share, value))
            total += share
        if 1 - total > 0:
            cn_weights.append((0, 1 - total, math.inf))
        for _, share, value in cn_weights:
            if share > best_weight:
                best_weight, best_bin = share, value
        chosen = np.nonzero(weight >= best_bin)[0]
        return [(int(site_index[k]), face_coords[k]) for k in chosen]
