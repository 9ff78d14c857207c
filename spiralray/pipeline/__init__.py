"""Running segmentation over images of any size: the plan, tile work and assembly (pure of Ray),
the in-process executor, and the Ray Data executor (the only module here that imports Ray)."""
