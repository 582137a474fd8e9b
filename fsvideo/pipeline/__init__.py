"""The streaming pipeline: the stage contract, the bounded runner, the declarative chains of
``pipelines/`` and the jobs (``edit``, ``invert``) built from them.

* :mod:`.stage`        Stage (the contract), FunctionStage, SourceStage, SinkStage, RunStats
* :mod:`.runner`       run_pipeline (threads + bounded queues, or sequential), run_chain
* :mod:`.stage_calls`  the timed, checked stage calls both executors share
* :mod:`.chain`        register_stage, build_chain (``pipelines/<name>.yaml``)
* :mod:`.components`   Components: the typed, frozen objects handed to stages
* :mod:`.options`      RunOptions and the one mapping of run options to stage options
* :mod:`.video_stages`, :mod:`.face_stages`, :mod:`.model_stages`  the registered stages
* :mod:`.jobs`, :mod:`.edit`, :mod:`.invert`  edit_video, invert_video
"""
from fsvideo._lazy import lazy_exports

# Imported on first use, so `fsvideo edit --help` (which reads the defaults of .options) stays light.
_EXPORTS = {
    **dict.fromkeys(["PIPELINES_DIR", "STAGE_MODULES", "build_chain", "load_chain_spec", "register_stage",
                     "registered_stages"], "fsvideo.pipeline.chain"),
    "Components": "fsvideo.pipeline.components",
    **dict.fromkeys(["run_chain", "run_pipeline"], "fsvideo.pipeline.runner"),
    **dict.fromkeys(["FunctionStage", "Packet", "RunStats", "SinkStage", "SourceStage", "Stage", "StageStats",
                     "check_chain", "max_in_flight"], "fsvideo.pipeline.stage"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
