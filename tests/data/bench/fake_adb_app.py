"""A stand-in for adb running the sample app's benchmark mode: records each call, answers from recorded outputs.

Environment: FAKE_LOG (a JSON list of the arguments per call is appended), FAKE_DATA (this folder),
FAKE_AM (what `am start` prints; default am_start_ok.txt), FAKE_LOGCAT (what `logcat` prints once the app is
done), FAKE_LOGCAT_PENDING (how many `logcat` calls come before that, printing only the header), FAKE_DEAD
(`pidof` finds no process).
"""

import json
import os
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
    reply("adb_devices_one.txt")
if args == ["shell", "getprop"]:
    reply("getprop.txt")
if args[:2] == ["install", "-r"] and Path(args[2]).is_file():
    print("Performing Streamed Install\nSuccess")
    sys.exit(0)
if args == ["shell", "date +%s"]:
    print("1712917867")
    sys.exit(0)
if args[:1] == ["shell"] and args[1].startswith("am start "):
    reply(os.environ.get("FAKE_AM", "am_start_ok.txt"))
if args[:1] == ["shell"] and args[1].startswith("pidof "):
    if os.environ.get("FAKE_DEAD"):
        sys.exit(1)
    print("12345")
    sys.exit(0)
if args[:1] == ["logcat"]:
    counter = log_path.with_suffix(".logcat")
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < int(os.environ.get("FAKE_LOGCAT_PENDING", "0")):
        print("--------- beginning of main")
        sys.exit(0)
    reply(os.environ["FAKE_LOGCAT"])
print(f"fake adb: unexpected arguments {args}", file=sys.stderr)
sys.exit(1)
