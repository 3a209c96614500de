"""Every tuned constant of the minutiae extractor, in one place.

These are algorithm parameters, not site configuration: a polling station never
changes them. Distances are in pixels at the standard resolution (500 dpi),
because every stage runs on the image after it was resampled to 500 dpi.
"""

from __future__ import annotations

# --- input limits (checked before anything else) -----------------------------
MIN_SIDE_PX = 64
"""Smallest accepted image side, in native pixels (AES3500 frames are 128)."""

MAX_SIDE_PX = 2048
"""Largest accepted image side, in native pixels (FBI-style 1000 dpi slaps fit)."""

MAX_PIXELS = 2_000_000
"""Largest accepted native pixel count; bounds time and memory per capture."""

MIN_DPI = 250
"""Lowest accepted resolution (AuthenTec AES3500 is about 254 dpi)."""

MAX_DPI = 1000
"""Highest accepted resolution."""

MIN_STANDARD_SIDE_PX = 48
"""Smallest side once resampled to 500 dpi; below this there is no finger to see."""

# --- segmentation ------------------------------------------------------------
BLOCK = 8
"""Side of the block grid shared by segmentation, orientation and frequency."""

SEG_WINDOW = 16
"""Window (pixels) over which a block's grey-level spread is measured."""

SEG_MIN_STD = 6.0
"""Absolute floor on a foreground block's grey-level standard deviation."""

SEG_REL_STD = 0.20
"""Foreground blocks need at least this fraction of the 90th-percentile spread."""

SEG_MIN_COHERENCE = 0.10
"""Blocks whose orientation coherence stays below this are background (smudge)."""

SEG_BORDER_BLOCKS = 0
"""Blocks eroded from the mask so the extractor does not trust its rim."""

# --- normalisation -----------------------------------------------------------
NORM_RADIUS = 10
"""Half-size of the local mean/variance window (about one ridge period each side)."""

NORM_CLIP = 3.0
"""Normalised values are clipped to +-NORM_CLIP standard deviations."""

# --- orientation -------------------------------------------------------------
ORIENT_WINDOW = 16
"""Window (pixels) of the structure tensor per block."""

ORIENT_SMOOTH_SIGMA = 1.0
"""Gaussian smoothing of the doubled-angle field, in blocks."""

# --- frequency ---------------------------------------------------------------
FREQ_WINDOW_ACROSS = 32
"""Length of the oriented window across the ridges (x-signature length)."""

FREQ_WINDOW_ALONG = 16
"""Width of the oriented window along the ridges."""

MIN_PERIOD = 4.0
"""Shortest plausible ridge period at 500 dpi (pixels)."""

MAX_PERIOD = 16.0
"""Longest plausible ridge period at 500 dpi (pixels)."""

DEFAULT_PERIOD = 9.0
"""Ridge period used where no block could be measured (typical adult finger)."""

# --- enhancement -------------------------------------------------------------
GABOR_ANGLES = 24
"""Number of quantised filter orientations over [0, pi)."""

GABOR_PERIOD_STEP = 0.5
"""Quantisation step of the filter bank's ridge period."""

GABOR_RADIUS = 8
"""Kernel half-size: 17 x 17 taps."""

GABOR_SIGMA_ACROSS = 0.45
"""Envelope sigma across the ridges, as a fraction of the local period."""

GABOR_SIGMA_ALONG = 4.5
"""Envelope sigma along the ridges, in pixels (bridges small breaks)."""

# --- binarisation ------------------------------------------------------------
MIN_RIDGE_AREA = 30
"""Ridge fragments smaller than this (pixels) are noise, removed."""

MIN_VALLEY_AREA = 30
"""Valley holes smaller than this (pixels) are pores, filled."""

# --- minutiae detection and removal of false minutiae ------------------------
BORDER_DISTANCE = 8.0
"""Minutiae closer than this to the mask's edge are artefacts of the cut-off."""

TRACE_STEPS = 12
"""Skeleton pixels followed from a minutia to measure its direction."""

SPUR_LENGTH = 8
"""An ending that reaches a bifurcation within this many steps is a spur."""

SHORT_RIDGE_LENGTH = 10
"""A ridge with both ends within this many steps is a dot or short fragment."""

BREAK_DISTANCE = 14.0
"""Two endings facing each other this close are one broken ridge."""

BREAK_ANGLE = 0.9
"""Largest deviation (radians) from anti-parallel for two endings to be a break."""

BRIDGE_DISTANCE = 8.0
"""Two bifurcations this close across the ridge flow are a bridge between ridges."""

CLUSTER_RADIUS = 16.0
"""Radius of the neighbourhood counted for the cluster test."""

CLUSTER_MAX = 4
"""More than this many minutiae within CLUSTER_RADIUS is noise, all removed."""

MAX_MINUTIAE = 120
"""Keep at most this many minutiae (highest quality first); ISO allows 255."""

# --- quality -----------------------------------------------------------------
QUALITY_AREA_FULL_MM2 = 90.0
"""Foreground area (mm^2) that earns the full coverage score."""

QUALITY_COHERENCE_FULL = 0.75
"""Mean foreground orientation coherence that earns the full certainty score."""

QUALITY_CONTRAST_FULL = 30.0
"""Median foreground block spread (grey levels) that earns the full contrast score."""

QUALITY_THRESHOLD = 30
"""Capture quality (0-100) below which the kiosk asks the voter to press again."""

MIN_MINUTIAE_FOR_QUALITY = 8
"""Fewer reliable minutiae than this caps the capture quality below the threshold."""

# --- output convention ---------------------------------------------------------
ISO_ANGLE_OFFSET = 3.141592653589793
"""Added to the internal direction when writing ISO angles (see pipeline.to_iso_angle)."""
