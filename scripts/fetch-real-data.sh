#!/usr/bin/env bash
# Fetches the real data umdflow's gated tests use, from pinned registry packages, into the
# git-ignored folder data/real/ (or $UMDFLOW_REAL_DATA). Idempotent: a package already
# extracted is skipped. Needs pip and python3; about 65 MB of downloads.
#
#   pydicom 3.0.2        MIT            real CT/MR/US/NM DICOM test files in many encodings
#   pydicom-data 1.0.0   MIT            larger DICOM images (chest CR, head CT, ...)
#   torchxrayvision 1.5.7 Apache-2.0 code; the IU X-ray reports inside are CC BY-NC-ND 4.0:
#                        read them at run time, never commit text derived from them
#   radlabels 0.2.0      MIT            1,000 MIMIC-style reports with labels
#
# See docs/data.md ("Real data") for what each gated test checks.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${UMDFLOW_REAL_DATA:-$root/data/real}"
downloads="$out/downloads"
mkdir -p "$downloads"

# fetch NAME VERSION WHEEL_GLOB: downloads the wheel once (no dependencies).
fetch() {
    local name="$1" version="$2" glob="$3"
    if ! ls "$downloads"/$glob >/dev/null 2>&1; then
        python3 -m pip download --quiet --no-deps --dest "$downloads" "$name==$version"
    fi
    ls "$downloads"/$glob | head -n 1
}

# extract WHEEL PREFIX DEST: copies the wheel members under PREFIX into DEST (flattened
# below PREFIX), then marks DEST complete.
extract() {
    local wheel="$1" prefix="$2" dest="$3"
    [ -f "$dest/.complete" ] && return 0
    rm -rf "$dest" && mkdir -p "$dest"
    python3 "$root/scripts/extract_wheel.py" "$wheel" "$prefix" "$dest"
    touch "$dest/.complete"
}

wheel=$(fetch pydicom 3.0.2 'pydicom-3.0.2-*.whl')
extract "$wheel" pydicom/data/test_files/ "$out/pydicom"

wheel=$(fetch pydicom-data 1.0.0 'pydicom_data-1.0.0-*.whl')
extract "$wheel" data_store/data/ "$out/pydicom-data"

wheel=$(fetch radlabels 0.2.0 'radlabels-0.2.0-*.whl')
extract "$wheel" radlabels/samples/ "$out/radlabels"

wheel=$(fetch torchxrayvision 1.5.7 'torchxrayvision-1.5.7-*.whl')
if [ ! -f "$out/iu-xray/.complete" ]; then
    rm -rf "$out/iu-xray" && mkdir -p "$out/iu-xray"
    python3 "$root/scripts/extract_wheel.py" "$wheel" torchxrayvision/data/NLMCXR_reports.tgz "$out/iu-xray" --untar
    touch "$out/iu-xray/.complete"
fi

echo "real data ready in $out"
