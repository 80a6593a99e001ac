#!/bin/sh
# check-po.sh SRC: every translation in po/LINGUAS compiles (msgfmt --check) and translates every
# message of the sources listed in po/POTFILES.in as they are now (no untranslated or fuzzy
# message after msgmerge with a freshly extracted template). Output: TAP.
set -eu
SRC=$1
for tool in xgettext msgmerge msgfmt; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not installed"
    exit 77
  fi
done
T=$(mktemp -d "${TMPDIR:-/tmp}/gt-po.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
grep -v '^#' "$SRC/po/POTFILES.in" | grep -v '^$' > "$T/POTFILES"
xgettext --package-name=gt --from-code=UTF-8 --add-comments=TRANSLATORS --keyword=_ --keyword=N_ \
  --keyword=C_:1c,2 --keyword=NC_:1c,2 -D "$SRC" -f "$T/POTFILES" -o "$T/gt.pot"
n=0
fail=0
for lang in $(grep -v '^#' "$SRC/po/LINGUAS"); do
  po="$SRC/po/$lang.po"
  n=$((n + 1))
  if out=$(msgfmt --check -o "$T/$lang.mo" "$po" 2>&1); then
    echo "ok $n - $lang.po compiles"
  else
    echo "not ok $n - $lang.po compiles"
    echo "$out" | sed 's/^/# /'
    fail=1
  fi
  n=$((n + 1))
  msgmerge --quiet --no-fuzzy-matching "$po" "$T/gt.pot" -o "$T/$lang.merged.po"
  stats=$(msgfmt --check --statistics -o /dev/null "$T/$lang.merged.po" 2>&1)
  if echo "$stats" | grep -q -e untranslated -e fuzzy; then
    echo "not ok $n - $lang.po translates every message ($stats)"
    msgattrib --untranslated --no-obsolete "$T/$lang.merged.po" | grep '^msgid' | sed 's/^/# /'
    fail=1
  else
    echo "ok $n - $lang.po translates every message ($stats)"
  fi
done
echo "1..$n"
exit $fail
