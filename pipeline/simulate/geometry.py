"""Detector layout, pointing, WCS and time conventions of the simulated FFIs.

Coordinates (DESIGN §4): pixel positions are 0-based (row, col) in the S×S science
region; pixel (r, c) spans r−0.5..r+0.5 and c−0.5..c+0.5, so a star at (10.0, 20.0)
is centred on pixel (10, 20). The written image is (S+30)×(S+88): science rows 0:S,
cols 44:44+S (full size: 2078×2136, science rows 0:2048, cols 44:2092). Image
coordinates are x = col + 44, y = row (0-based); FITS/WCS pixels are x+1, y+1.

Time: BTJD = BJD_TDB − 2457000. The spacecraft clock time of an exposure is
TSTART − BARYCORR; the file name's timestamp is that time in UTC.
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np

FULL_SIZE = 2048
COL_OFFSET = 44            # serial prescan columns left of the science region
EXTRA_COLS = 88            # 44 prescan + 44 overscan
EXTRA_ROWS = 30            # virtual/smear rows above the science region
PIXEL_SCALE = 21.0         # arcsec per pixel
SCCONFIG = 150             # spacecraft configuration id written in names and headers

# Camera boresight in (x = col + 44, y = row) of the full CCD, (camera, ccd) -> (x, y):
# TASOC's Sector-1 WCS averages (DESIGN §4). Beyond the top edge of every CCD.
BORESIGHT = {
    (1, 1): (2158.2, 2099.5), (1, 2): (-5.7, 2098.0), (1, 3): (2141.5, 2099.9), (1, 4): (-22.4, 2100.1),
    (2, 1): (2148.6, 2094.0), (2, 2): (-16.8, 2095.8), (2, 3): (2151.4, 2105.7), (2, 4): (-13.1, 2106.0),
    (3, 1): (2152.2, 2092.3), (3, 2): (-10.5, 2093.1), (3, 3): (2145.0, 2107.9), (3, 4): (-17.4, 2105.3),
    (4, 1): (2149.3, 2091.4), (4, 2): (-12.9, 2093.4), (4, 3): (2148.9, 2110.7), (4, 4): (-14.6, 2111.3),
}

SECTOR1_START = 1325.3     # BTJD of the first Sector-1 FFI
SECTOR_LENGTH = 27.4       # days
ORBIT_PERIOD = 13.7        # days, TESS orbit (two per sector)
BTJD_EPOCH = _dt.datetime(2014, 12, 8, 12, 0, 0)   # JD 2457000.0
TT_MINUS_UTC = 69.184      # s: 32.184 + 37 leap seconds (valid for every TESS date)
AU_LIGHT_SECONDS = 499.004784
OBLIQUITY = math.radians(23.4392911)


def image_shape(size: int) -> tuple[int, int]:
    """(rows, cols) of the written image for an S×S science region."""
    return size + EXTRA_ROWS, size + EXTRA_COLS


def science_slices(size: int) -> tuple[slice, slice]:
    """Index of the science region in the written image."""
    return slice(0, size), slice(COL_OFFSET, COL_OFFSET + size)


def boresight(camera: int, ccd: int) -> tuple[float, float]:
    return BORESIGHT[(int(camera), int(ccd))]


def sector_start(sector: int) -> float:
    """BTJD of the first FFI of a sector (Sector 1 at 1325.3, 27.4 d per sector)."""
    return SECTOR1_START + (int(sector) - 1) * SECTOR_LENGTH


# ---------------------------------------------------------------- time conversion

def btjd_to_utc(t: float) -> _dt.datetime:
    """UTC calendar time of a TDB instant given in BTJD (TDB−TT < 2 ms is ignored)."""
    return BTJD_EPOCH + _dt.timedelta(days=float(t)) - _dt.timedelta(seconds=TT_MINUS_UTC)


def iso_utc(t: float) -> str:
    """SPOC style DATE-OBS string, millisecond precision with a trailing Z."""
    d = btjd_to_utc(t)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def name_timestamp(t: float) -> str:
    """YYYYDDDHHMMSS of a BTJD instant in UTC (the SPOC file-name timestamp)."""
    return btjd_to_utc(t).strftime("%Y%j%H%M%S")


def ffi_name(timestamp: str, sector: int, camera: int, ccd: int) -> str:
    return f"tess{timestamp}-s{int(sector):04d}-{int(camera)}-{int(ccd)}-{SCCONFIG:04d}-s_ffic.fits"


def barycorr(t, ra: float, dec: float):
    """Barycentric correction (days, t_bary − t_spacecraft) towards (ra, dec) in deg.

    Earth's heliocentric position from the low-precision solar ephemeris (~0.01°);
    TESS's own orbit (≤ 1.3 light-seconds) and the Sun–barycentre offset are ignored.
    """
    t = np.asarray(t, dtype=float)
    d = t + 2457000.0 - 2451545.0
    g = np.radians(357.529 + 0.98560028 * d)
    lon = np.radians(280.459 + 0.98564736 * d + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    r = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)
    lam, beta = equatorial_to_ecliptic(ra, dec)
    lam, beta = math.radians(lam), math.radians(beta)
    n = (math.cos(beta) * math.cos(lam), math.cos(beta) * math.sin(lam), math.sin(beta))
    proj = -r * (np.cos(lon) * n[0] + np.sin(lon) * n[1])     # Earth = −(Sun from Earth)
    return proj * AU_LIGHT_SECONDS / 86400.0


# ---------------------------------------------------------------- sky geometry

def ecliptic_to_equatorial(lam: float, beta: float) -> tuple[float, float]:
    lam, beta = math.radians(lam), math.radians(beta)
    x = math.cos(beta) * math.cos(lam)
    y = math.cos(beta) * math.sin(lam)
    z = math.sin(beta)
    ye = y * math.cos(OBLIQUITY) - z * math.sin(OBLIQUITY)
    ze = y * math.sin(OBLIQUITY) + z * math.cos(OBLIQUITY)
    return math.degrees(math.atan2(ye, x)) % 360.0, math.degrees(math.asin(max(-1.0, min(1.0, ze))))


def equatorial_to_ecliptic(ra: float, dec: float) -> tuple[float, float]:
    ra, dec = math.radians(ra), math.radians(dec)
    x = math.cos(dec) * math.cos(ra)
    y = math.cos(dec) * math.sin(ra)
    z = math.sin(dec)
    yl = y * math.cos(OBLIQUITY) + z * math.sin(OBLIQUITY)
    zl = -y * math.sin(OBLIQUITY) + z * math.cos(OBLIQUITY)
    return math.degrees(math.atan2(yl, x)) % 360.0, math.degrees(math.asin(max(-1.0, min(1.0, zl))))


def position_angle(ra1, dec1, ra2, dec2) -> float:
    """Position angle (deg, east of north) of point 2 seen from point 1."""
    a1, d1, a2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    da = a2 - a1
    return math.degrees(math.atan2(math.sin(da) * math.cos(d2),
                                   math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(da)))


def pointing(sector: int, camera: int) -> dict:
    """Nominal pointing: the four cameras along one ecliptic meridian, camera 1 at
    |β| = 18°, camera 4 on the ecliptic pole, spacecraft boresight at |β| = 54°;
    southern hemisphere for sectors 1–13, 27–39, ..., northern for 14–26, ...;
    longitude (≈ anti-Sun at mid-sector) stepping 360°/13 per sector from 315.8°."""
    sector, camera = int(sector), int(camera)
    sign = -1.0 if ((sector - 1) // 13) % 2 == 0 else 1.0
    lam = (315.8 + ((sector - 1) % 13) * 360.0 / 13.0) % 360.0
    beta_cam = sign * min(18.0 + 24.0 * (camera - 1), 90.0)
    ra_c, dec_c = ecliptic_to_equatorial(lam, beta_cam if abs(beta_cam) < 90 else sign * 89.999)
    ra_nom, dec_nom = ecliptic_to_equatorial(lam, sign * 54.0)
    # "up" of the focal plane points away from the ecliptic along the meridian
    ra_t, dec_t = ecliptic_to_equatorial(lam, beta_cam - sign * 1.0)
    pa_up = (position_angle(ra_c, dec_c, ra_t, dec_t) + 180.0) % 360.0
    ra_e, dec_e = ecliptic_to_equatorial(lam, sign * 53.0)
    roll = (position_angle(ra_nom, dec_nom, ra_e, dec_e) + 180.0) % 360.0
    return {"ra": ra_c, "dec": dec_c, "pa": pa_up, "ra_nom": ra_nom, "dec_nom": dec_nom,
            "roll_nom": roll, "ecl_lon": lam, "ecl_lat": beta_cam}


def wcs_cards(size: int, sector: int, camera: int, ccd: int) -> list[tuple]:
    """TAN WCS cards of the written image (FITS 1-based pixels, x = col + 45, y = row + 1).

    A camera-centred gnomonic projection: the boresight pixel (DESIGN §4 table, off the
    CCD) maps to the camera centre, 21″/px, rotated so the focal plane's up points away
    from the ecliptic, CCDs 3/4 turned by 180°; positive determinant (TESS images are
    mirrored). A size-S frame is the CCD's first S rows and columns (its sky, too).
    """
    p = pointing(sector, camera)
    s = PIXEL_SCALE / 3600.0
    phi = math.radians(p["pa"])
    cd = s * np.array([[math.cos(phi), math.sin(phi)], [-math.sin(phi), math.cos(phi)]])
    if ccd in (3, 4):
        cd = -cd
    bx, by = boresight(camera, ccd)
    return [
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CTYPE1", "RA---TAN", "Gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "Gnomonic projection"),
        ("CRVAL1", p["ra"], "[deg] right ascension at reference pixel"),
        ("CRVAL2", p["dec"], "[deg] declination at reference pixel"),
        ("CRPIX1", bx + 1.0, "[pixel] reference pixel along image axis 1"),
        ("CRPIX2", by + 1.0, "[pixel] reference pixel along image axis 2"),
        ("CUNIT1", "deg", "physical unit of axis 1"),
        ("CUNIT2", "deg", "physical unit of axis 2"),
        ("CD1_1", float(cd[0, 0]), "transformation matrix"),
        ("CD1_2", float(cd[0, 1]), "transformation matrix"),
        ("CD2_1", float(cd[1, 0]), "transformation matrix"),
        ("CD2_2", float(cd[1, 1]), "transformation matrix"),
    ]


def wcs(size: int, sector: int, camera: int, ccd: int):
    """astropy WCS of the written image (0-based x = col + 44, y = row)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    cards = {k: v for k, v, _ in wcs_cards(size, sector, camera, ccd)}
    w.wcs.ctype = [cards["CTYPE1"], cards["CTYPE2"]]
    w.wcs.crval = [cards["CRVAL1"], cards["CRVAL2"]]
    w.wcs.crpix = [cards["CRPIX1"], cards["CRPIX2"]]
    w.wcs.cd = [[cards["CD1_1"], cards["CD1_2"]], [cards["CD2_1"], cards["CD2_2"]]]
    return w


def ccd_center_radec(sector: int, camera: int, ccd: int) -> tuple[float, float]:
    """(RA, Dec) in degrees of the centre of a CCD's science region."""
    ra, dec = wcs(FULL_SIZE, sector, camera, ccd).all_pix2world(
        [[COL_OFFSET + (FULL_SIZE - 1) / 2.0, (FULL_SIZE - 1) / 2.0]], 0)[0]
    return float(ra), float(dec)
