"""vibench: benchmarking and tracking variational-inference experiments."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${abspath:...} in conf/: a path given relative to the directory the command ran in (e.g.
# VIBENCH_DATA_DIR=../shared/data) becomes absolute when the config is composed, so it still
# points at the same folder from a job's output folder, a symlink, a SLURM job or a test's tmp dir.
if not OmegaConf.has_resolver("abspath"):
    OmegaConf.register_new_resolver("abspath", lambda path: str(Path(str(path)).expanduser().resolve()))
