"""``python -m vibench [overrides] [-m] [overrides]``: compose the config with Hydra and run it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vibench.errors import VibenchError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Hydra flags that take the next argument as their value.
_VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def flags_first(argv: list[str]) -> list[str]:
    """Move Hydra's flags before the overrides, keeping each group's order.

    Hydra parses its command line with argparse, which (on Python < 3.12) rejects overrides on
    both sides of a flag: ``+experiment=aevb_mnist -m latent=2,5`` fails with "unrecognized
    arguments". Overrides never start with ``-``, so moving the flags (and their values) to the
    front gives Hydra the same request in a form it accepts.
    """
    flags, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            takes_value = arg in _VALUE_FLAGS or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in _INFO_CHOICES)
            if takes_value and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags + overrides


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from vibench.report_console import print_error
    from vibench.run import run

    try:
        return run(cfg)
    except VibenchError as e:
        print_error(str(e))
        sys.exit(2)


def cli() -> None:
    sys.argv[1:] = flags_first(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
