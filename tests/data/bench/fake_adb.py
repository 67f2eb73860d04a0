"""A stand-in for adb: records each call, answers from recorded outputs.

Environment: FAKE_LOG (a JSON list of the arguments per call is appended), FAKE_DATA (this folder),
FAKE_DEVICES (file `adb devices -l` prints), FAKE_OUTPUT / FAKE_OUTPUT_<entry> (what the runner prints for
an entry point), FAKE_RC / FAKE_RC_<entry> (the runner's exit code).
"""

import json
import os
import re
import sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
data = Path(os.environ["FAKE_DATA"])
if args[:1] == ["-s"]:
    args = args[2:]


def reply(name: str, code: int = 0) -> None:
    sys.stdout.write((data / name).read_text())
    sys.exit(code)


if args == ["devices", "-l"]:
    reply(os.environ.get("FAKE_DEVICES", "adb_devices_one.txt"))
if args == ["shell", "getprop"]:
    reply("getprop.txt")
if args[0] == "push":
    if not Path(args[1]).is_file():
        print(f"adb: error: cannot stat '{args[1]}': No such file or directory", file=sys.stderr)
        sys.exit(1)
    print(f"{args[1]}: 1 file pushed, 0 skipped. 212.4 MB/s ({Path(args[1]).stat().st_size} bytes in 0.001s)")
    sys.exit(0)
runner = re.search(r"--(?:method_name|signature_to_run_for)=(\w+)", " ".join(args))
if args[0] == "shell" and runner:
    entry = runner.group(1)
    output = os.environ.get(f"FAKE_OUTPUT_{entry}", os.environ.get("FAKE_OUTPUT"))
    reply(output, int(os.environ.get(f"FAKE_RC_{entry}", os.environ.get("FAKE_RC", "0"))))
if args[0] == "shell":  # mkdir, chmod, rm
    sys.exit(0)
print(f"fake adb: unexpected arguments {args}", file=sys.stderr)
sys.exit(1)
