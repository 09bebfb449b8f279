#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The manual pages: each renders without a single warning; each program's
# page mentions, and lists under OPTIONS, every long option that the
# program's --help prints (for estc, also every subcommand's --help); and
# every option a page lists under OPTIONS exists.
#
# usage: check-man.sh [BUILD_ROOT [SOURCE_ROOT]]
#   (default: $ESTC_BUILD_ROOT and $ESTC_SOURCE_ROOT)
set -u

build=${1:-${ESTC_BUILD_ROOT:-}}
src=${2:-${ESTC_SOURCE_ROOT:-}}
if [ -z "$build" ] || [ -z "$src" ]; then
  echo "usage: $0 BUILD_ROOT SOURCE_ROOT (or set ESTC_BUILD_ROOT and ESTC_SOURCE_ROOT)" >&2
  exit 2
fi
mandir=$src/docs/man
pages=(estc.1 estc-server.8 estc-engine-test.1 estc-provider.7)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-man.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { echo "SKIP $*"; }

have_man=false
have_groff=false
command -v man >/dev/null 2>&1 && have_man=true
command -v groff >/dev/null 2>&1 && have_groff=true

# ---- rendering: any text on stderr is a failure -------------------------

render_check() { # label file command...
  local label=$1 out=$2
  shift 2
  local rc=0
  "$@" >"$out" 2>"$tmp/stderr" || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$label: exit status $rc"
    sed 's/^/    /' "$tmp/stderr"
  elif [ -s "$tmp/stderr" ]; then
    fail "$label: warnings"
    sed 's/^/    /' "$tmp/stderr"
  elif [ "$out" != /dev/null ] && [ ! -s "$out" ]; then
    fail "$label: no output"
  else
    pass "$label"
  fi
}

if ! $have_man && ! $have_groff; then
  fail "man or groff installed (scripts/install-deps.sh installs man-db and groff-base)"
fi

for page in "${pages[@]}"; do
  f=$mandir/$page
  if [ ! -f "$f" ]; then
    fail "$page exists"
    continue
  fi
  if $have_man; then
    render_check "$page renders with man --warnings at 80 columns" "$tmp/$page.80" \
      env LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$f"
  fi
  if $have_groff; then
    render_check "$page renders with groff -man -ww" /dev/null groff -man -ww -z "$f"
  fi
done

# The text searched for options: rendered so wide that no line is broken or
# hyphenated inside an option, Unicode hyphens and minus signs made ASCII.
text_of() { # page
  local f=$mandir/$1
  {
    if $have_man; then
      LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=1000 man -E UTF-8 -l "$f"
    elif $have_groff; then
      groff -man -Tutf8 -rLL=1000n -P-cbou "$f"
    fi
  } 2>/dev/null | sed -e 's/\xe2\x80\x90/-/g' -e 's/\xe2\x80\x91/-/g' -e 's/\xe2\x88\x92/-/g'
}

for page in "${pages[@]}"; do
  [ -f "$mandir/$page" ] && text_of "$page" >"$tmp/$page.txt"
done

# ---- the options of each program ----------------------------------------

# Long options in a --help text, one per line.
options_in() { # file
  grep -oE -- '--[a-z0-9][a-z0-9-]*' "$1" | sed 's/-*$//' | sort -u
}

# Whether the rendered page mentions the option as a whole word.
mentions() { # page option
  grep -qE -- "(^|[^a-zA-Z0-9-])$2([^a-zA-Z0-9-]|\$)" "$tmp/$1.txt"
}

# The options a page lists as tags of its OPTIONS section.
listed_options() { # page
  sed -n '/^OPTIONS/,/^[A-Z]/p' "$tmp/$1.txt" |
    grep -oE -- '^ {7}(-[a-zA-Z], )?--[a-z0-9-]+' | grep -oE -- '--[a-z0-9-]+' | sort -u
}

check_program() { # page program-label help-files...
  local page=$1 prog=$2
  shift 2
  if [ ! -f "$tmp/$page.txt" ]; then
    fail "$page: cannot check the options of $prog without the page"
    return
  fi
  : >"$tmp/opts"
  local h o
  for h in "$@"; do
    options_in "$h" | sed "s|\$|	${h##*/}|" >>"$tmp/opts"
  done
  listed_options "$page" >"$tmp/listed"
  local from
  while read -r o; do
    from=$(grep -- "^$o	" "$tmp/opts" | cut -f2 | sed 's/\.help$//; s/_/ /g' |
      paste -sd, - | sed 's/,/, /g')
    if grep -qx -- "$o" "$tmp/listed"; then
      pass "$page documents $o under OPTIONS"
    elif mentions "$page" "$o"; then
      fail "$page mentions $o but does not list it under OPTIONS (printed by: $from)"
    else
      fail "$page does not mention $o (printed by: $from)"
    fi
  done < <(cut -f1 "$tmp/opts" | sort -u)
  # No option in the page that the program does not know.
  # --help itself counts: its output is what is being read.
  { cut -f1 "$tmp/opts"; cat "$tmp/extra"; echo --help; } | sort -u >"$tmp/known"
  while read -r o; do
    if grep -qx -- "$o" "$tmp/known"; then
      pass "$page lists $o, an option of $prog"
    else
      fail "$page lists $o, which $prog does not print in its --help"
    fi
  done <"$tmp/listed"
}

# Runs a program; its output (both streams) goes to $tmp/OUT-NAME.
help_of() { # out-name program args...
  local out=$tmp/$1
  shift
  if "$@" >"$out" 2>&1; then
    return 0
  fi
  fail "$(basename "$1") ${*:2}: exit status not 0"
  return 1
}

# estc: the main help and every subcommand's.
estc=$build/tools/estc/estc
if [ -x "$estc" ]; then
  helps=()
  help_of estc.help "$estc" --help && helps+=("$tmp/estc.help")
  subs=$(sed -n '/^Subcommands:/,/^$/p' "$tmp/estc.help" | sed -n 's/^  \([a-z0-9-]*\) .*/\1/p')
  if [ -z "$subs" ]; then
    fail "estc --help lists subcommands"
  fi
  for sub in $subs; do
    help_of "estc_${sub}.help" "$estc" "$sub" --help && helps+=("$tmp/estc_${sub}.help")
    if grep -qE "^ {3}$sub\$" "$tmp/estc.1.txt" 2>/dev/null; then
      pass "estc.1 has a section for the subcommand $sub"
    else
      fail "estc.1 has no section for the subcommand $sub"
    fi
  done
  # Options outside the subcommands' help: checked to exist.
  : >"$tmp/extra"
  if "$estc" --version 2>/dev/null | grep -q '^estc '; then
    echo --version >>"$tmp/extra"
  fi
  check_program estc.1 estc "${helps[@]}"
else
  skip "estc is not built: $estc"
fi

srv=$build/tools/estc-server/estc-server
if [ -x "$srv" ]; then
  : >"$tmp/extra"
  # --verbose is the long form of -v; it is accepted but not in the help.
  if "$srv" --verbose --help >/dev/null 2>&1; then
    echo --verbose >>"$tmp/extra"
  fi
  help_of estc-server.help "$srv" --help && check_program estc-server.8 estc-server "$tmp/estc-server.help"
else
  skip "estc-server is not built: $srv"
fi

et=$build/tools/estc-engine-test/estc-engine-test
if [ -x "$et" ]; then
  : >"$tmp/extra"
  help_of estc-engine-test.help "$et" --help &&
    check_program estc-engine-test.1 estc-engine-test "$tmp/estc-engine-test.help"
else
  skip "estc-engine-test is not built: $et"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
