#!/usr/bin/env bash
# Download, here (where pip reaches the package index), the wheels that the GPU machine's image lacks
# (diffusers, pydantic and what they need beyond the image's packages), for Python 3.12 on x86-64, into
# .whl/ (ignored by git through .git/info/exclude). scripts/gpu_check.sh installs them there when the
# imports fail; the device call names .whl in its carry list. See docs/benchmarks.md, "The GPU run".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python="${PYTHON:-python3}"
# the versions this checkout is tested with
wheels=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        importlib-metadata==10.2.0 lazy-importer typing-extensions==4.16.0)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl "${wheels[@]}"
ls -l .whl
