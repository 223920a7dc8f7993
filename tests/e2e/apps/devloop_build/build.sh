# The build of the devloop_build test app. Fails, like a compiler, while
# src.txt holds the word "broken"; otherwise writes out.bin into the app
# directory, as a build that is not in skip_files would.
echo "building $(cat src.txt)"
if grep -q broken src.txt; then
    echo "src.txt:1:1: error: the source says broken" >&2
    exit 1
fi
if [ -f slow.txt ]; then sleep "$(cat slow.txt)"; fi
date +%s%N > out.bin
echo "build ok"
