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
from fsvideo.pipeline.chain import (PIPELINES_DIR, STAGE_MODULES, build_chain, load_chain_spec, register_stage,
                                    registered_stages)
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.runner import run_chain, run_pipeline
from fsvideo.pipeline.stage import (FunctionStage, Packet, RunStats, SinkStage, SourceStage, Stage, StageStats,
                                    check_chain, max_in_flight)

__all__ = ["PIPELINES_DIR", "STAGE_MODULES", "Components", "FunctionStage", "Packet", "RunStats", "SinkStage",
           "SourceStage", "Stage", "StageStats", "build_chain", "check_chain", "load_chain_spec", "max_in_flight",
           "register_stage", "registered_stages", "run_chain", "run_pipeline"]
