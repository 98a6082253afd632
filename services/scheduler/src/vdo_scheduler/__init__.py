"""VDO scheduler: decides when queued jobs may run."""
