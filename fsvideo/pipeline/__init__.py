"""The stage contract, the bounded streaming runner and the declarative chains of ``pipelines/``.

* :mod:`fsvideo.pipeline.runner`  Stage, run_pipeline (threads + bounded queues), run_chain
* :mod:`fsvideo.pipeline.chain`   register_stage, build_chain (``pipelines/<name>.yaml``)
* :mod:`fsvideo.pipeline.video_stages`  the ``decode`` source and ``encode_video`` sink
"""
from fsvideo.pipeline.chain import (PIPELINES_DIR, STAGE_MODULES, build_chain, load_chain_spec, register_stage,
                                    registered_stages)
from fsvideo.pipeline.runner import (FunctionStage, Packet, RunStats, SinkStage, SourceStage, Stage, StageStats,
                                     check_chain, max_in_flight, run_chain, run_pipeline)

__all__ = ["PIPELINES_DIR", "STAGE_MODULES", "FunctionStage", "Packet", "RunStats", "SinkStage", "SourceStage",
           "Stage", "StageStats", "build_chain", "check_chain", "load_chain_spec", "max_in_flight",
           "register_stage", "registered_stages", "run_chain", "run_pipeline"]
