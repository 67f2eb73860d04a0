"""Which MIL ops the Core ML conversion of every registered variant makes, at every entry point (fp16, iOS17,
128x128, random weights): writes tests/data/coreml_mil_ops.json, which tests/test_coreml_mil.py holds the
reference evaluator to. Run it again after a model or coremltools change (about 10 minutes on 2 cores):

    python3 scripts/coreml_op_survey.py
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import rapsam
from rapsam.config import VARIANTS
from rapsam.convert import coreml
from rapsam.convert.base import TargetRequest
from rapsam.export import ENTRY_POINTS

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "coreml_mil_ops.json"


def main() -> None:
    ct = coreml._coremltools()
    request = TargetRequest(entry_points=tuple(ENTRY_POINTS), input_size=(128, 128), num_prompts=3, precision="fp16")
    options = coreml.CoreMLOptions.parse({})
    variants = {}
    for name in sorted(VARIANTS):
        started = time.perf_counter()
        model = rapsam.build_model(name).eval()
        counts: Counter[str] = Counter()
        for entry in request.entry_points:
            counts.update(coreml._mil_ops(coreml._convert_entry(ct, model, entry, request, options).get_spec(), None))
        variants[name] = dict(sorted(counts.items()))
        print(f"{name}: {len(counts)} op types in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    survey = {"made_by": "scripts/coreml_op_survey.py", "coremltools": ct.__version__,
              "request": "fp16, iOS17, 128x128, every entry point", "variants": variants}
    OUT.write_text(json.dumps(survey, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
