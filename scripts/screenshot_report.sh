#!/usr/bin/env bash
# Render a report's HTML page to a PNG with headless Chromium (Debian's `chromium`), offline.
#   scripts/screenshot_report.sh runs/sweep/report/report.html [out.png] [WIDTHxHEIGHT]
# Installs chromium with apt-get when it is missing (needs root and the Debian mirrors).
set -euo pipefail
html="${1:?usage: $0 report.html [out.png] [1400x2000]}"
png="${2:-${html%.html}.png}"
size="${3:-1400x2000}"
[ -f "$html" ] || { echo "error: $html does not exist" >&2; exit 2; }
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  echo "chromium not found; installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  browser="$(command -v chromium)"
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
png_abs="$(cd "$(dirname "$png")" 2>/dev/null && pwd || { mkdir -p "$(dirname "$png")" && cd "$(dirname "$png")" && pwd; })/$(basename "$png")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$png_abs" --window-size="${size/x/,}" "file://$abs" >/dev/null 2>&1 || true
[ -s "$png_abs" ] || { echo "error: chromium wrote no screenshot to $png_abs" >&2; exit 1; }
echo "$png_abs"
