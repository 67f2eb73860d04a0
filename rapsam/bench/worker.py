"""`python -m rapsam.bench.worker`: one MeasureSpec as JSON on stdin -> one Measurement as JSON on stdout."""

from __future__ import annotations

import json
import sys

from rapsam.bench.desktop import MeasureSpec, measure


def main() -> None:
    data = json.loads(sys.stdin.read())
    data["input_size"] = tuple(data["input_size"])
    sys.stdout.write(json.dumps(measure(MeasureSpec(**data)).to_dict()) + "\n")


if __name__ == "__main__":
    main()
