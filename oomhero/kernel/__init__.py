"""The only rooms that name files under /sys and /proc: cgroup.py (reading a memory cgroup, v1
and v2 behind one face), locate.py (finding a process's cgroup), procfs.py (processes, pidfds)."""
