"""A stand-in for xcrun (simctl, devicectl) running the sample app's benchmark mode: records each call, answers
from recorded outputs.

Environment: FAKE_LOG (a JSON list of the arguments per call is appended), FAKE_DATA (this folder),
FAKE_CONSOLE (what the app prints on its console), FAKE_RC (the launch's exit code).
"""

import json
import os
import sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["simctl", "install"] or args[:3] == ["devicectl", "device", "install"]:
    print(f"App installed: {args[-1]}")
    sys.exit(0)
if args[:2] == ["simctl", "launch"] or args[:4] == ["devicectl", "device", "process", "launch"]:
    sys.stdout.write((Path(os.environ["FAKE_DATA"]) / os.environ["FAKE_CONSOLE"]).read_text())
    sys.exit(int(os.environ.get("FAKE_RC", "0")))
print(f"fake xcrun: unexpected arguments {args}", file=sys.stderr)
sys.exit(64)
