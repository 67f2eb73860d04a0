#!/bin/sh
# Copies rapsam-convert's output folders (Core ML and ExecuTorch: each holds manifest.json) into the app
# bundle's Models/ folder, where the app finds them at run time (Artifacts.swift).
#
# Run by the "Copy RAP-SAM artifacts" build phase (project.yml), with Xcode's TARGET_BUILD_DIR and
# UNLOCALIZED_RESOURCES_FOLDER_PATH. By hand: DEST=/some/App.app/Models Scripts/copy-artifacts.sh
#
# RAPSAM_ARTIFACTS is either one artifact folder or a folder of them (default: the repository's artifacts/,
# as `rapsam-convert --out artifacts` writes it); sub-folders such as artifacts/quantized/ are searched too.
# Other targets (onnx, tflite) are skipped: the app runs Core ML and ExecuTorch only.
set -eu

SRC="${RAPSAM_ARTIFACTS:-${SRCROOT:-$(cd "$(dirname "$0")/.." && pwd)}/../../../artifacts}"
DEST="${DEST:-${TARGET_BUILD_DIR:?run from Xcode or set DEST}/${UNLOCALIZED_RESOURCES_FOLDER_PATH:?}/Models}"

# The target of an artifact: target.name of its manifest (plutil reads JSON), else its folder name's
# -coreml / -executorch part (rapsam-convert names folders MODEL-HxW-TARGET[-SCHEME]).
target_of() {
    name=$(/usr/bin/plutil -extract target.name raw -o - "$1/manifest.json" 2>/dev/null || true)
    if [ -z "$name" ]; then
        case "$(basename "$1")" in
            *-coreml|*-coreml-*) name=coreml ;;
            *-executorch|*-executorch-*) name=executorch ;;
        esac
    fi
    echo "$name"
}

copy() {  # ditto keeps the .mlpackage bundles as they are (cp -R where there is no ditto, off macOS)
    if [ -x /usr/bin/ditto ]; then /usr/bin/ditto "$1" "$2"; else cp -R "$1" "$2"; fi
}

rm -rf "$DEST"
mkdir -p "$DEST"
if [ -f "$SRC/manifest.json" ]; then
    echo "$SRC"
else
    find "$SRC" -maxdepth 3 -name manifest.json 2>/dev/null | sed 's|/manifest.json$||' | sort
fi | while IFS= read -r folder; do
    case "$(target_of "$folder")" in
        coreml|executorch)
            # test vectors (vectors/) come along: the benchmark takes its picture from them
            copy "$folder" "$DEST/$(basename "$folder")"
            echo "copy-artifacts: $(basename "$folder")"
            ;;
    esac
done

if [ -z "$(ls -A "$DEST")" ]; then
    # A warning, not an error: the app still builds and says in its status line what is missing.
    echo "warning: no Core ML or ExecuTorch artifact under $SRC; run rapsam-convert --target coreml --out <dir> and set RAPSAM_ARTIFACTS=<dir>"
fi
