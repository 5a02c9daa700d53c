"""oomhero: signal a container's processes before its memory cgroup hits the OOM killer."""

__version__ = "0.1.0"
