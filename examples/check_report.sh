#!/bin/sh
# Checks that memprune's HTML report renders in a real browser (headless Chromium): every
# <img> decoded (no broken image), every image a PNG data URI, the four charts drawn, the
# image grids present, nothing fetched from the network.
#
#   examples/check_report.sh                  # makes out/report.html on the embedded default, checks it
#   examples/check_report.sh A.html B.html    # checks these reports
#   SCREENSHOT=docs/report.png examples/check_report.sh   # also a screenshot of the first one
#     (SCREENSHOT_SIZE=W,H, default 1360,1500; SCREENSHOT_OFFSET=N: N pixels down the page)
#
# Needs chromium (Debian: apt-get install -y chromium). Exit code 0 when every report passes.
set -eu
cd "$(dirname "$0")/.."
CHROMIUM=${CHROMIUM:-chromium}
command -v "$CHROMIUM" >/dev/null || { echo "check_report: $CHROMIUM not found (apt-get install -y chromium)" >&2; exit 2; }
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    ./target/release/memprune report --out out/report.html -q
    set -- out/report.html
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The check runs in the page once everything has loaded, and writes its result into the DOM,
# which --dump-dom prints. It is appended to a copy: the report itself has no script.
cat > "$tmp/check.js" <<'EOF'
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const svgOf = id => { const e = document.getElementById(id); return e && e.querySelector('svg'); };
  const ids = ['chart-layermem', 'chart-dlayermem', 'chart-unitmem', 'chart-excess'];
  const measured = !!document.getElementById('chart-layermem');
  const charts = ids.filter(id => { const s = svgOf(id); return s && s.getBoundingClientRect().width > 100; });
  const external = [...document.querySelectorAll('[src],[href]')]
    .map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !u.startsWith('data:') && !u.startsWith('#'));
  const r = {
    images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
    not_png: imgs.filter(i => !i.src.startsWith('data:image/png;base64,')).length,
    charts: charts.length,
    charts_expected: measured ? 4 : 2,
    point_grids: document.querySelectorAll('.grid[data-kind=highest], .grid[data-kind=lowest]').length,
    unit_grids: document.querySelectorAll('.grid[data-kind=units]').length,
    external: external.length,
  };
  r.pass = r.images > 0 && r.broken === 0 && r.not_png === 0 && r.charts === r.charts_expected
    && r.unit_grids > 0 && (!measured || r.point_grids > 0) && r.external === 0;
  const p = document.createElement('pre');
  p.id = 'check-result';
  p.textContent = JSON.stringify(r);
  document.body.appendChild(p);
});
</script>
EOF
fail=0
for report in "$@"; do
    copy="$tmp/$(basename "$report")"
    cat "$report" "$tmp/check.js" > "$copy"
    result=$("$CHROMIUM" --headless --no-sandbox --disable-gpu --virtual-time-budget=10000 \
        --dump-dom "file://$copy" 2>/dev/null | sed -n 's:.*<pre id="check-result">\(.*\)</pre>.*:\1:p')
    if [ -z "$result" ]; then
        echo "$report: FAIL (the check did not run)"
        fail=1
    elif echo "$result" | grep -q '"pass":true'; then
        echo "$report: pass $result"
    else
        echo "$report: FAIL $result"
        fail=1
    fi
done
if [ -n "${SCREENSHOT:-}" ]; then
    # The first report, SCREENSHOT_OFFSET pixels down, in a frame shifted up by a margin
    # (headless screenshots start at the top of the page).
    size=${SCREENSHOT_SIZE:-1360,1500}
    w=${size%,*}
    h=${size#*,}
    off=${SCREENSHOT_OFFSET:-0}
    printf '<html><body style="margin:0"><div style="overflow:hidden;width:%spx;height:%spx"><iframe src="file://%s" style="border:0;width:%spx;height:%spx;margin-top:-%spx"></iframe></div></body></html>\n' \
        "$w" "$h" "$(realpath "$1")" "$w" "$((h + off))" "$off" > "$tmp/shot.html"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000 \
        --window-size="$size" --screenshot="$SCREENSHOT" "file://$tmp/shot.html" >/dev/null 2>&1
    echo "screenshot: $SCREENSHOT ($(wc -c < "$SCREENSHOT") bytes)"
fi
exit $fail
