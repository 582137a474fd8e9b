"""fsvideo: Feature-Style encoder video inversion and face editing with a pretrained StyleGAN2.

The package is organised the way the data flows:

* ``fsvideo.models``   networks (StyleGAN2 generator, Feature-Style encoder, ArcFace, BiSeNet, LPIPS)
* ``fsvideo.edits``    Eq. 1 editing, directions, SeFa, style mixing
* ``fsvideo.faces``    detection, tracking, FFHQ alignment, stabilisation, blending back
* ``fsvideo.video``    decoding / encoding with PyAV (audio copied, timestamps kept)
* ``fsvideo.pipeline`` the bounded streaming runner, the stages of ``pipelines/*.yaml`` and the jobs
* ``fsvideo.metrics``  SSIM, PSNR, MSE, LPIPS, identity similarity, identity consistency (Eq. 9)
* ``fsvideo.train``    the encoder trainer (Eqs. 2-8)
* ``fsvideo.weights``  the registry and cache of every weights file fsvideo can use
* ``fsvideo.cli``      the command line, a thin layer over the above
* ``fsvideo.studio``   ``fsvideo studio``: a local web page to try edits on a video's frames, also a thin layer

The library never prints: it logs through :mod:`logging` and reports progress through callbacks.
"""
__version__ = "0.1.0"

from fsvideo._lazy import lazy_exports  # noqa: E402
from fsvideo.errors import FsvideoError  # noqa: E402

# The public API, imported on first use so that `import fsvideo` (and `fsvideo --help`) stays light.
_LAZY = {
    "edit_video": "fsvideo.pipeline.edit",
    "invert_video": "fsvideo.pipeline.invert",
    "RunOptions": "fsvideo.pipeline.options",
    "RunSummary": "fsvideo.pipeline.jobs",
    "EditRequest": "fsvideo.edits.requests",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = ["__version__", "FsvideoError", *_LAZY]
