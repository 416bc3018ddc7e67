"""The networks' parts: backbones, context blocks, the ATRC module, mTEB / xTAM, the multi-task and single-task
networks. Which network a ``model.type`` builds is registered in ``trcnas.nas.families.MODEL_TYPES`` (plain
networks and space families alike; ``build_model`` / ``build_supergraph`` are the one entry point)."""
