"""Reading the TOML configs of the command line (`gflow run --config`, `gflow sweep CONFIG`)."""

import tomllib
from pathlib import Path


def read(path) -> dict:
    """The table in the TOML file at `path`. A file that is missing, unreadable or not valid
    TOML is a `ValueError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a TOML config file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason}): a TOML config must be UTF-8") from None
