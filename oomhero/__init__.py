"""oomhero: signal a container's processes before its memory cgroup hits the OOM killer.

The rooms, a sample's path and where to add a source or an action: docs/layout.md."""

__version__ = "0.1.0"
