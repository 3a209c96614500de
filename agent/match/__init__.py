"""On-device fingerprint matching: template codecs, extraction, 1:1 and 1:N matching.

Public, stable API (used by the station application and by external evaluation)::

    from agent.match import load_template, Matcher, TemplateError, extract
    t = load_template(data)            # ISO 19794-2:2005/2011 or ANSI 378, auto-detected
    to_iso2005(t), to_ansi378(t)       # writers (one view, 197 px/cm)
    m = Matcher()                      # default parameters
    m.compare(a, b) -> float           # higher = more similar, symmetric
    g = m.gallery(templates)
    g.search(probe, top=10) -> list[tuple[int, float]]
    t = extract(image, dpi=500)        # uint8 HxW -> Template, t.quality 0-100
"""

from agent.match.codecs import load_template, to_ansi378, to_iso2005
from agent.match.extraction import ImageError, extract
from agent.match.matcher import Gallery, Matcher
from agent.match.template import STANDARD_DPI, MinutiaType, Template, TemplateError

__all__ = [
    "STANDARD_DPI",
    "Gallery",
    "ImageError",
    "Matcher",
    "MinutiaType",
    "Template",
    "TemplateError",
    "extract",
    "load_template",
    "to_ansi378",
    "to_iso2005",
]
