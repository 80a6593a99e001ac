#!/bin/sh
# check-fuzz-targets.sh DIR NAME...: every DIR/fuzz-*.c (but the replay driver fuzz-main.c) is one
# of the NAMEs given (the list in meson.build), and each NAME has a non-empty DIR/corpus/NAME/.
dir=$1
shift
status=0
for f in "$dir"/fuzz-*.c; do
  name=$(basename "$f" .c)
  name=${name#fuzz-}
  [ "$name" = main ] && continue
  listed=0
  for n in "$@"; do
    [ "$n" = "$name" ] && listed=1
  done
  if [ $listed = 0 ]; then
    echo "fuzz-$name.c is not listed in fuzz_targets in tests/fuzzing/meson.build" >&2
    status=1
  fi
done
for n in "$@"; do
  if [ ! -f "$dir/fuzz-$n.c" ]; then
    echo "fuzz_targets lists '$n' but $dir/fuzz-$n.c does not exist" >&2
    status=1
  elif [ -z "$(ls -A "$dir/corpus/$n" 2>/dev/null)" ]; then
    echo "fuzz-$n has no seeds in $dir/corpus/$n/" >&2
    status=1
  elif ! grep -q 'LLVMFuzzerTestOneInput' "$dir/fuzz-$n.c"; then
    echo "fuzz-$n.c does not define LLVMFuzzerTestOneInput" >&2
    status=1
  fi
done
[ $status = 0 ] && echo "$# fuzz targets, each listed, with a seed corpus"
exit $status
