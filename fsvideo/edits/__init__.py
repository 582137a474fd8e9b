"""Latent editing: Eq. 1 of the paper, edit directions, SeFa, style mixing."""
from fsvideo.edits.directions import EDIT_STEP, as_wplus_direction, load_direction
from fsvideo.edits.eq1 import EditSpec, edit_codes, style_mix

__all__ = ["EDIT_STEP", "EditSpec", "as_wplus_direction", "edit_codes", "load_direction", "style_mix"]
