#!/usr/bin/env bash
# The render's candidate speed-ups, side by side in one run: six 4.5 s scene segments at
# 1080x1920 (a detailed 1024x1536 picture, narration, 250 ms fades) encoded the way
# CREVID encodes a segment, with one change per row. Rounds interleave the rows; each row
# prints its median wall time for the six segments and its ratio to the first row.
#   bench/render-candidates.sh [rounds]
set -euo pipefail
rounds=${1:-3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=1024x1536" -frames:v 1 picture.png
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=f=300:d=4.1" -ar 24000 narration.wav

# segment OUT PRESCALE_PERCENT MOTION(1|0) [extra ffmpeg output options...]
segment() {
  local out=$1 k=$2 motion=$3
  shift 3
  local sw=$((1080 * k / 100 / 2 * 2)) sh=$((1920 * k / 100 / 2 * 2)) video
  if [ "$motion" = 1 ]; then
    video="scale=$sw:$sh:force_original_aspect_ratio=increase,crop=$sw:$sh,setsar=1,zoompan=z='min(1+0.08*on/135,1.08)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=135:s=1080x1920:fps=30"
  else
    # The still fast path: the picture scaled once, then the same frame repeated.
    video="scale=1080:1920:force_original_aspect_ratio=increase,crop=1080:1920,setsar=1,loop=loop=134:size=1:start=0,settb=1/30,setpts=N"
  fi
  ffmpeg -hide_banner -loglevel error -y -i picture.png -i narration.wav -filter_complex \
    "[0:v]$video,format=yuv420p,fade=t=in:st=0:d=0.25,fade=t=out:st=4.25:d=0.25[v];[1:a]aresample=48000,apad,atrim=0:4.5[a]" \
    -map '[v]' -map '[a]' -c:v libx264 -preset veryfast -crf 22 -r 30 "$@" \
    -c:a aac -b:a 128k -ac 2 -t 4.5 -f mp4 "$out"
}

# Six segments one at a time, or two at a time.
one_by_one() { for i in 1 2 3 4 5 6; do segment "s$i.mp4" "$@"; done; }
two_at_once() {
  for i in 1 3 5; do
    segment "s$i.mp4" "$@" &
    segment "s$((i + 1)).mp4" "$@"
    wait
  done
}

rows=(
  "one_by_one 200 1|as CREVID encoded before: 2x pre-scale, one at a time"
  "one_by_one 125 1|pre-scale 1.25x (zoom ends at 1.08x)"
  "one_by_one 200 1 -tune stillimage|-tune stillimage"
  "one_by_one 200 0|motion off: the still fast path (no zoompan)"
  "two_at_once 200 1|two segments at once"
  "two_at_once 200 1 -threads 1|two at once, x264 -threads 1 each"
)
declare -A times
for round in $(seq "$rounds"); do
  for row in "${rows[@]}"; do
    cmd=${row%%|*}
    start=$(date +%s.%N)
    $cmd
    end=$(date +%s.%N)
    times[$cmd]+="$(echo "$end - $start" | bc) "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[${rows[0]%%|*}]}" | median)
echo "render candidates: six 4.5 s 1080x1920 segments, $rounds rounds, $(nproc) cores"
for row in "${rows[@]}"; do
  cmd=${row%%|*}
  m=$(echo "${times[$cmd]}" | median)
  printf '  %-58s median %6.2f s  %.2fx   (runs: %s)\n' "${row#*|}" "$m" "$(echo "$m / $base" | bc -l)" "${times[$cmd]% }"
done
