"""Inversion quality and identity consistency metrics (paper Tables 1 and 3, Eq. 9 and Fig. 9), and the
temporal quality of edited videos (STIT's TL-ID / TG-ID, flicker, background preservation, jitter).

One metric per module, each naming the implementation it matches:

=========================  =====================================================================
module                     what
=========================  =====================================================================
``ssim``                   :func:`ssim` (= scikit-image ``structural_similarity`` defaults)
``psnr``                   :func:`psnr` (= scikit-image), :func:`mse` (on [-1, 1], the paper's scale)
``perceptual``             :class:`LPIPS` (v0.1 AlexNet, = the ``lpips`` package)
``identity``               identity networks R: ArcFace (paper) or dlib's ResNet descriptor (offline)
``consistency``            :func:`identity_consistency` (Eq. 9), :func:`id_similarity`
``ravdess``                :func:`parse_ravdess_name` (``MM-VC-EE-II-SS-RR-AA``)
``inversion``              the :class:`Inverter` hook and :class:`FeatureStyleInverter`
``evaluate``               :class:`ClipEvaluator`, :func:`evaluate_clips`, :func:`pair_metrics`
``results`` / ``summary``  per-clip results, cache, CSV/JSON, mean ± std and breakdowns
``plots``                  :func:`ic_boxplot` (Fig. 9), :func:`temporal_curves`
``distributed``            torchrun sharding and merging
``temporal``               edited video vs its source: STIT TL-ID / TG-ID, identity to frame 0,
                           flicker, background, landmark jitter (:class:`TemporalEvaluator`)
``flicker``                flow-warping error (forward-backward occlusion check), background PSNR
``pairs``                  pairing edited videos with their sources, :func:`evaluate_pairs`
``temporal_report``        summary, ``temporal.csv`` / ``temporal_frames.csv`` / ``temporal.json``
=========================  =====================================================================

Imports are lazy (``from fsvideo.metrics import LPIPS`` loads only what it needs).  The pixel
metrics come from their modules (``from fsvideo.metrics.ssim import ssim``,
``from fsvideo.metrics.psnr import psnr, mse``): a package-level ``ssim`` would be shadowed by the
submodule of the same name.
"""
from __future__ import annotations

from fsvideo._lazy import lazy_exports

_EXPORTS = {
    "LPIPS": "fsvideo.metrics.perceptual",
    "identity_consistency": "fsvideo.metrics.consistency",
    "id_similarity": "fsvideo.metrics.consistency",
    "ConsistencyAccumulator": "fsvideo.metrics.consistency",
    "IdentityNetwork": "fsvideo.metrics.identity",
    "ArcFaceIdentity": "fsvideo.metrics.identity",
    "DlibIdentity": "fsvideo.metrics.identity",
    "load_identity": "fsvideo.metrics.identity",
    "RavdessName": "fsvideo.metrics.ravdess",
    "parse_ravdess_name": "fsvideo.metrics.ravdess",
    "Inverter": "fsvideo.metrics.inversion",
    "FeatureStyleInverter": "fsvideo.metrics.inversion",
    "ClipEvaluator": "fsvideo.metrics.evaluate",
    "evaluate_clips": "fsvideo.metrics.evaluate",
    "find_clips": "fsvideo.metrics.evaluate",
    "pair_metrics": "fsvideo.metrics.evaluate",
    "sample_clips": "fsvideo.metrics.evaluate",
    "ClipResult": "fsvideo.metrics.results",
    "EvalSettings": "fsvideo.metrics.results",
    "ResultsCache": "fsvideo.metrics.results",
    "MixedNetworksError": "fsvideo.metrics.results",
    "summarize": "fsvideo.metrics.summary",
    "ic_boxplot": "fsvideo.metrics.plots",
    "Distributed": "fsvideo.metrics.distributed",
    "temporal_curves": "fsvideo.metrics.plots",
    "TemporalEvaluator": "fsvideo.metrics.temporal",
    "PairResult": "fsvideo.metrics.temporal",
    "tl_id": "fsvideo.metrics.temporal",
    "tg_id": "fsvideo.metrics.temporal",
    "WarpErrorMeter": "fsvideo.metrics.flicker",
    "find_pairs": "fsvideo.metrics.pairs",
    "evaluate_pairs": "fsvideo.metrics.pairs",
    "summarize_temporal": "fsvideo.metrics.temporal_report",
    "write_temporal": "fsvideo.metrics.temporal_report",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
