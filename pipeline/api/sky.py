"""Cone search that runs on every MongoDB-compatible server.

nx-27017 has no geo operators ($nearSphere, $geoWithin), so a cone is a box
prefilter on the indexed ``ra``/``dec`` fields — only the declination band when the
box crosses RA 0/360 or holds a pole — then the exact angular distance here.
"""

from __future__ import annotations

import math


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees (haversine: accurate at small separations)."""
    ra1, dec1, ra2, dec2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = (math.sin((dec2 - dec1) / 2) ** 2
         + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2)
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def ra_half_width(dec: float, radius: float) -> float | None:
    """Half-width in RA (deg) of the box around a cone; None when the cone holds a
    pole (then every RA is inside)."""
    if abs(dec) + radius >= 90.0:
        return None
    # the widest point of a small circle is at declination asin(sin dec / cos r)
    ratio = math.sin(math.radians(radius)) / math.cos(math.radians(dec))
    if ratio >= 1.0:
        return None
    return math.degrees(math.asin(ratio))


def box_query(ra: float, dec: float, radius: float, ra_field: str = "ra",
              dec_field: str = "dec") -> dict:
    """A query selecting a box that contains the cone (ra, dec, radius), in degrees."""
    query: dict = {dec_field: {"$gte": max(-90.0, dec - radius), "$lte": min(90.0, dec + radius)}}
    half = ra_half_width(dec, radius)
    if half is None or half >= 180.0:
        return query
    lo, hi = ra - half, ra + half
    if lo >= 0.0 and hi < 360.0:
        query[ra_field] = {"$gte": lo, "$lte": hi}
    # Across RA 0/360 the box would be two RA ranges, an $or, which nx-27017 evaluates
    # in Python on every document of the collection; the declination band alone is
    # still an indexed prefilter, and the exact distance does the rest.
    return query


def within(ra: float, dec: float, radius: float, ra_field: str = "ra", dec_field: str = "dec"):
    """A predicate: does a document's position lie within the cone?"""
    def inside(doc: dict) -> bool:
        r, d = doc.get(ra_field), doc.get(dec_field)
        if not isinstance(r, (int, float)) or not isinstance(d, (int, float)):
            return False
        return angular_distance(ra, dec, float(r), float(d)) <= radius
    return inside
