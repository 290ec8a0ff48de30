#!/usr/bin/env bash
# Every shell command in README.md and docs/*.md runs as written (issue #21: the README's
# dp lines failed and nothing noticed). The fenced ```sh / ```bash / ```console blocks are
# extracted (a line ending in `\` continues on the next; blank lines and `#` comment lines are
# not commands; in ```console blocks only lines starting with `$ ` are, without the `$ `),
# and each command runs through bash in one scratch directory, in file order (README.md first,
# then docs/*.md by name; the blocks of a file in order, so a later block may use what an earlier
# one made, e.g. runs/llama-text), where examples/, tests/, scripts/ and docs/ are the source
# tree's and build/bin/meshtrain is the binary under test (a bare `meshtrain` is not on PATH: a
# reader who built the project has build/bin/meshtrain, so that is what docs write). A
# command that exits non-zero is a failure naming FILE:LINE; the rest of its block is skipped,
# the other blocks still run.
#
# Short runs: build/bin/meshtrain is a wrapper that appends options to the commands that
# would run long (later key=value overrides and options win, so the documented values stay as
# written and still parse, but a run is a few steps): `train` gets $DOC_TEST_TRAIN
# (train.steps=3), `bench step` $DOC_TEST_BENCH_STEP (one step of a 2-block model), `bench
# allreduce`, `bench pipeline` and `bench generate` smaller sweeps. The environment is the one
# the README describes for root on a small machine: mpirun as root and oversubscribed
# (OMPI_ALLOW_RUN_AS_ROOT*, OMPI_MCA_rmaps_base_oversubscribe).
#
# A block that cannot run here is marked in the markdown, on the line before its fence:
#   <!-- doc-test: skip (the reason, shown to the reader of the source) -->
# A marker without a reason, or one not followed by a fence, is itself a failure.
#
# DOC_TEST_ONLY=REGEX runs only the commands whose FILE:LINE matches (e.g. 'README.md:1[0-9][0-9]$');
# DOC_TEST_FILES='a.md b.md' checks other files. Before the docs, a self-check runs a small
# markdown file with a marked block, a failing command and a marker without a reason, and
# requires exactly the expected runs, skips and failures (FILE:LINE named).
source "$(dirname "$0")/lib.sh"

SRC=$(cd "$MT_SOURCE_DIR" && pwd)
BIN=$(cd "$(dirname "$MESHTRAIN")" && pwd)/$(basename "$MESHTRAIN")
FILES=${DOC_TEST_FILES:-"$SRC/README.md $(ls "$SRC"/docs/*.md | sort | tr '\n' ' ')"}
: "${DOC_TEST_TRAIN:=train.steps=3}" "${DOC_TEST_BENCH_STEP:=--steps 1 --warmup 0 model.n_layer=2}"
: "${DOC_TEST_BENCH_ALLREDUCE:=--max-bytes 1048576 --iters 3 --warmup 1}"
: "${DOC_TEST_BENCH_PIPELINE:=--block-ms 2 --repeat 1 --micro 4}" "${DOC_TEST_BENCH_GENERATE:=--new-tokens 16}"

# the scratch tree
D=$WORK/doc
mkdir -p "$D/build/bin" "$D/runs"
for d in examples tests scripts docs; do ln -s "$SRC/$d" "$D/$d"; done
cat > "$D/build/bin/meshtrain" <<EOF
#!/usr/bin/env bash
# doc_commands_test: the binary under test, with short runs appended
case "\${1:-} \${2:-}" in
  "train "*) exec "$BIN" "\$@" $DOC_TEST_TRAIN ;;
  "bench step") exec "$BIN" "\$@" $DOC_TEST_BENCH_STEP ;;
  "bench allreduce") exec "$BIN" "\$@" $DOC_TEST_BENCH_ALLREDUCE ;;
  "bench pipeline") exec "$BIN" "\$@" $DOC_TEST_BENCH_PIPELINE ;;
  "bench generate") exec "$BIN" "\$@" $DOC_TEST_BENCH_GENERATE ;;
esac
exec "$BIN" "\$@"
EOF
chmod +x "$D/build/bin/meshtrain"
export OMPI_MCA_rmaps_base_oversubscribe=true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # (several ranks share the 2 cores)

# extract FILE... : FILE LINE BLOCK SKIP-REASON COMMAND per command, separated by \x1f (a tab
# would merge an empty field in `read`); marker errors as ERROR<TAB>FILE:LINE<TAB>why
cat > "$WORK/extract.py" <<'PY'
import os, re, sys
fence = re.compile(r'^\s*```(\w*)\s*$')
marker = re.compile(r'^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$')
for path in sys.argv[1:]:
    name = os.path.relpath(path, os.environ.get("MT_SOURCE_DIR", "."))
    lines = open(path, encoding="utf-8").read().split("\n")
    i, block, pending = 0, 0, None  # pending: (line, skip reason) of a marker awaiting its fence
    while i < len(lines):
        m = marker.match(lines[i])
        if m:
            if pending: print(f"ERROR\t{name}:{pending[0]}\tmarker not followed by a fence")
            s = re.fullmatch(r'skip\s*\((.+)\)', m.group(1))
            if not s: print(f"ERROR\t{name}:{i+1}\texpected <!-- doc-test: skip (reason) -->, got '{m.group(1)}'")
            pending = (i + 1, s.group(1).strip() if s else "bad marker")
            i += 1; continue
        f = fence.match(lines[i])
        if not f:
            if pending and lines[i].strip(): print(f"ERROR\t{name}:{pending[0]}\tmarker not followed by a fence"); pending = None
            i += 1; continue
        lang, start = f.group(1), i
        i += 1
        body = []
        while i < len(lines) and not fence.match(lines[i]): body.append((i + 1, lines[i])); i += 1
        i += 1  # the closing fence
        skip = pending[1] if pending else ""
        pending = None
        if lang not in ("sh", "bash", "console"): continue
        block += 1
        k = 0
        while k < len(body):
            no, text = body[k]
            if lang == "console":
                if not text.lstrip().startswith("$ "): k += 1; continue
                text = text.lstrip()[2:]
            while text.rstrip().endswith("\\") and k + 1 < len(body):
                k += 1
                text = text.rstrip()[:-1] + " " + body[k][1].strip()
            k += 1
            if not text.strip() or text.lstrip().startswith("#"): continue
            print("\x1f".join([name, str(no), str(block), skip, text.strip()]))
    if pending: print(f"ERROR\t{name}:{pending[0]}\tmarker not followed by a fence")
PY
extract() { python3 "$WORK/extract.py" "$@"; }

# run_commands LIST: runs each command in $D; prints ok/FAIL/skip per command and sets ran,
# skipped, failures
run_commands() {
  ran=0 skipped=0 failures=0
  local bad_block= file line block skip cmd where t rc log=$WORK/cmd.log
  if grep -q '^ERROR' "$1"; then
    grep '^ERROR' "$1" | while IFS=$'\t' read -r _ where why; do echo "FAIL: $where: $why" >&2; done
    failures=$(grep -c '^ERROR' "$1"); return
  fi
  while IFS=$'\x1f' read -r file line block skip cmd; do
    where="$file:$line"
    if [ -n "${DOC_TEST_ONLY:-}" ] && ! grep -Eq -- "$DOC_TEST_ONLY" <<<"$where"; then continue; fi
    if [ -n "$skip" ]; then
      skipped=$((skipped + 1)); echo "skip  $where  ($skip)"; continue
    fi
    if [ "$bad_block" = "$file#$block" ]; then
      echo "skip  $where  (an earlier command of its block failed)"; continue
    fi
    t=$(date +%s)
    rc=0
    (cd "$D" && bash -o pipefail -c "$cmd") > "$log" 2>&1 < /dev/null || rc=$?
    ran=$((ran + 1))
    echo "$(printf '%-5s %3ss' "$([ $rc = 0 ] && echo ok || echo FAIL)" $(( $(date +%s) - t )))  $where  $cmd"
    if [ $rc != 0 ]; then
      failures=$((failures + 1)); bad_block="$file#$block"
      echo "FAIL: $where exits $rc: $cmd" >&2
      tail -n 25 "$log" | sed 's/^/    | /' >&2
    fi
  done < "$1"
}

# The check of the check: a broken command fails naming its FILE:LINE, the rest of its block
# is skipped, other blocks run, a marked block does not run, a bad marker fails.
cat > "$WORK/selfcheck.md" <<'MD'
<!-- doc-test: skip (never runs) -->
```sh
touch runs/skipped
```
```bash
touch runs/ran
exit 3
touch runs/after_failure
```
```console
$ touch runs/console \
    runs/continued
not a command
```
MD
extract "$WORK/selfcheck.md" > "$WORK/selfcheck.list"
DOC_TEST_ONLY= run_commands "$WORK/selfcheck.list" > "$WORK/selfcheck.log" 2>&1
grep -q "FAIL: .*selfcheck.md:7 exits 3: exit 3" "$WORK/selfcheck.log" && [ $failures = 1 ] && [ $ran = 3 ] &&
  [ $skipped = 1 ] && [ -e "$D/runs/ran" ] && [ -e "$D/runs/continued" ] && [ ! -e "$D/runs/skipped" ] &&
  [ ! -e "$D/runs/after_failure" ] || { cat "$WORK/selfcheck.log"; fail "the doc-test's self-check"; }
printf '<!-- doc-test: skip -->\n```sh\ntrue\n```\n' > "$WORK/badmarker.md"
extract "$WORK/badmarker.md" > "$WORK/badmarker.list"
DOC_TEST_ONLY= run_commands "$WORK/badmarker.list" > "$WORK/badmarker.log" 2>&1
[ $failures = 1 ] && grep -q "badmarker.md:1: expected <!-- doc-test: skip (reason) -->" "$WORK/badmarker.log" ||
  { cat "$WORK/badmarker.log"; fail "a marker without a reason was accepted"; }
rm -rf "$D/runs"/*

LIST=$WORK/commands.list
extract $FILES > "$LIST"
[ -s "$LIST" ] || fail "no commands found in $FILES"
T0=$(date +%s)
run_commands "$LIST"
[ $ran -gt 0 ] || [ -n "${DOC_TEST_ONLY:-}" ] || fail "no command ran (all $skipped skipped?)"
echo "doc commands: $ran run, $skipped skipped (marked), $failures failed, $(( $(date +%s) - T0 )) s"
[ $failures = 0 ] || fail "$failures documented command(s) failed as written (FILE:LINE above)"
