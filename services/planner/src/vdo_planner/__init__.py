"""VDO planner service."""
