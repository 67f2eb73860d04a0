"""A stand-in for adb: records each call, answers from recorded outputs, for both the benchmark runners
(`push`, the runner's shell command) and the sample app's benchmark mode (`install`, `am start`, `logcat`).

Environment: FAKE_LOG (a JSON list of the arguments per call is appended), FAKE_DATA (this folder),
FAKE_DEVICES (file `adb devices -l` prints). Runners: FAKE_OUTPUT / FAKE_OUTPUT_<entry> (what the runner prints
for an entry point), FAKE_RC / FAKE_RC_<entry> (the runner's exit code). App: FAKE_AM (what `am start` prints;
default am_start_ok.txt), FAKE_LOGCAT (what `logcat` prints once the app is done), FAKE_LOGCAT_PENDING (how
many `logcat` calls come before that, printing only the header), FAKE_DEAD (`pidof` finds no process).
"""

import json
import os
import re
import sys
from pathlib import Path

args = sys.argv[1:]
log_path = Path(os.environ["FAKE_LOG"])
with log_path.open("a") as log:
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
if args[:2] == ["install", "-r"] and Path(args[2]).is_file():
    print("Performing Streamed Install\nSuccess")
    sys.exit(0)
if args == ["shell", "date +%s"]:
    print("1712917867")
    sys.exit(0)
if args[0] == "shell" and args[1].startswith("am start "):
    reply(os.environ.get("FAKE_AM", "am_start_ok.txt"))
if args[0] == "shell" and args[1].startswith("pidof "):
    if os.environ.get("FAKE_DEAD"):
        sys.exit(1)
    print("12345")
    sys.exit(0)
runner = re.search(r"--(?:method_name|signature_to_run_for)=(\w+)", " ".join(args))
if args[0] == "shell" and runner:
    entry = runner.group(1)
    output = os.environ.get(f"FAKE_OUTPUT_{entry}", os.environ.get("FAKE_OUTPUT"))
    reply(output, int(os.environ.get(f"FAKE_RC_{entry}", os.environ.get("FAKE_RC", "0"))))
if args[0] == "shell":  # mkdir, chmod, rm
    sys.exit(0)
if args[0] == "logcat":
    counter = log_path.with_suffix(".logcat")
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < int(os.environ.get("FAKE_LOGCAT_PENDING", "0")):
        print("--------- beginning of main")
        sys.exit(0)
    reply(os.environ["FAKE_LOGCAT"])
print(f"fake adb: unexpected arguments {args}", file=sys.stderr)
sys.exit(1)
