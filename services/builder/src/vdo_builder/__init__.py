"""VDO builder service."""
