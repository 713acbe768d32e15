"""``python -m vibench [overrides] [-m]``: compose the config with Hydra and run it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vibench.errors import VibenchError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from vibench.report_console import print_error
    from vibench.run import run

    try:
        return run(cfg)
    except VibenchError as e:
        print_error(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
