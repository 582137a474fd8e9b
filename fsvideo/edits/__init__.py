"""Latent editing: Eq. 1 of the paper, edit directions, SeFa, style mixing, and edit requests.

* :mod:`.eq1`         :func:`edit_codes` (Eq. 1), :func:`style_mix`
* :mod:`.directions`  loading directions (unit W+), ``EDIT_STEP`` (15, the official scale)
* :mod:`.requests`    :class:`EditRequest` (``--attr smile --strength 2``) -> :class:`EditSpec`
* :mod:`.sefa`, :mod:`.interfacegan`  finding directions
"""
from fsvideo.edits.directions import EDIT_STEP, as_wplus_direction, load_direction
from fsvideo.edits.eq1 import EditSpec, edit_codes, style_mix
from fsvideo.edits.requests import EditRequest, resolve_edits

__all__ = ["EDIT_STEP", "EditRequest", "EditSpec", "as_wplus_direction", "edit_codes", "load_direction",
           "resolve_edits", "style_mix"]
