#!/usr/bin/env bash
# Render a Marp deck to HTML with the pinned Marp CLI (npm package, run through npx).
# Usage: render_slides.sh DECK.md OUT.html MARP_PACKAGE
set -euo pipefail
deck=$1; out=$2; marp=$3
if ! command -v npx >/dev/null 2>&1; then
    echo "error: rendering the slides needs Node.js (npx) to run ${marp}; install Node.js >= 18" \
         "(e.g. 'apt install nodejs npm' or https://nodejs.org) and run again." \
         "The deck itself is ready: ${deck}" >&2
    exit 1
fi
tmp="${out}.tmp.html"
npx --yes "${marp}" --html --allow-local-files "${deck}" -o "${tmp}"
rewardseg embed-images "${tmp}"   # one self-contained file: it can be moved or mailed
mv "${tmp}" "${out}"
