"""Host tests: pure parsing and policy, real processes and signals, the CLI as a subprocess.

They never write to the machine's /sys/fs/cgroup; cgroup files are synthetic trees in tmp_path.
Real kernel cgroup behaviour is tested in the qemu guest (tests/guest)."""
