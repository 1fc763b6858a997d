"""What machine and software produced a benchmark number (the runtime's record, for the scripts here)."""
from genre_edge.bench.machine import cpu_model_and_flags, git_sha, machine, machine_markdown  # noqa: F401
