"""A stand-in for xcodebuild: records each call (with what `test` finds staged in its working directory),
answers from recorded outputs.

Environment: FAKE_LOG (a JSON object per call is appended), FAKE_DATA (this folder), FAKE_XCODE_BROKEN
(`-version` fails as with only the command line tools selected), FAKE_OUTPUT and FAKE_RC (what `test` prints
and exits with).
"""

import json
import os
import sys
from pathlib import Path

args = sys.argv[1:]
resources = Path("Tests/RapsamBenchTests/Resources")
call = {"args": args}
if args[:1] == ["test"]:
    call["package"] = Path("Package.swift").is_file()
    call["bench"] = json.loads((resources / "bench.json").read_text())
    call["artifact"] = sorted(p.name for p in (resources / "artifact").iterdir())
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(call) + "\n")

if args == ["-version"]:
    if os.environ.get("FAKE_XCODE_BROKEN"):
        print("xcode-select: error: tool 'xcodebuild' requires Xcode, but active developer directory "
              "'/Library/Developer/CommandLineTools' is a command line tools instance", file=sys.stderr)
        sys.exit(1)
    print("Xcode 15.4\nBuild version 15F31d")
    sys.exit(0)
if args[:1] == ["test"]:
    sys.stdout.write((Path(os.environ["FAKE_DATA"]) / os.environ["FAKE_OUTPUT"]).read_text())
    sys.exit(int(os.environ.get("FAKE_RC", "0")))
print(f"fake xcodebuild: unexpected arguments {args}", file=sys.stderr)
sys.exit(64)
