import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "recurrent" / "tests" / "fixtures"


def cli_binary():
    """The `recurrent` command: $RECURRENT_BIN, else target/release/recurrent of this repository."""
    return pathlib.Path(os.environ.get("RECURRENT_BIN", REPO / "target" / "release" / "recurrent"))
