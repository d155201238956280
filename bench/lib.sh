# shellcheck shell=bash
# bench/lib.sh: what bench/run and bench/delivery share: paths, the generated closures
# (store-medium/, store-large/ and their attrs files, made with ../shared/data/gen_closure.py),
# tool checks and the timing helpers. Sourced, not run; the caller sets RUNS, TIMEOUT,
# CONTENTS, BUILD and FLOORS_ONLY before calling the functions that read them.

# shellcheck disable=SC2034  # variables used by the scripts that source this file
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
DATA=$ROOT/../shared/data
GEN=$DATA/gen_closure.py
CACHE=${BENCH_CACHE:-$ROOT/bench/.cache}
OUT=$CACHE/out   # images written by the "file"/gz/zstd cases: same disk as the store copy
TMP=$CACHE/tmp
BIN=$ROOT/target/release/nix-layers
RUNS_TSV=$CACHE/runs.tsv

MEDIUM_ROOTS=(python3.11 git gcc-12 perl vim)
LARGE_EXTRA_ROOTS=(g++-12 nodejs openjdk-17-jdk-headless docker.io llvm-14-dev kubectl podman
	postgresql-15 valgrind libclang-cpp14)
SYNTHETIC_SIZES=(1000 20000 100000 200000)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
have_bin() { ((!FLOORS_ONLY)) && [[ -x $BIN ]]; }

# ------------------------------------------------------------------------ setup

# ensure_tools [CMD:PACKAGE ...]: the tools every benchmark needs, plus the ones named
ensure_tools() {
	local missing=() pair cmd pkg
	for pair in pigz:pigz zstd:zstd /usr/bin/time:time openssl:openssl python3:python3 tar:tar "$@"; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	if ((EUID == 0)); then
		log "installing missing tools: ${missing[*]}"
		# wait for another apt (CI installs tools too) rather than fail on its lock
		local apt=(apt-get -o DPkg::Lock::Timeout=600)
		DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q "${missing[@]}" >&2 ||
			{ "${apt[@]}" update -q >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q "${missing[@]}" >&2; } ||
			die "apt-get install ${missing[*]} failed"
	else
		die "missing tools (${missing[*]}); install them (apt-get install ${missing[*]}) or run as root"
	fi
}

build_binary() {
	((BUILD)) || return 0
	log "cargo build --release"
	(cd "$ROOT" && cargo build --release >&2) || die "cargo build --release failed"
}

# gen_synthetic N: bench/.cache/syn-N.json, {"graph": [...]}, seed 7
gen_synthetic() {
	local n=$1 f=$CACHE/syn-$1.json
	[[ -s $f ]] && return 0
	log "generating synthetic graph, $n paths (seed 7)"
	python3 "$GEN" --synthetic "$n" --seed 7 --key graph --out "$f.tmp" -q && mv "$f.tmp" "$f"
}

# installed_roots ROOT...: prints the installed ones; installs missing ones when root
installed_roots() {
	local r missing=()
	for r in "$@"; do
		dpkg-query -W -f='${Status}' "$r" 2>/dev/null | grep -q ' installed$' || missing+=("$r")
	done
	if ((${#missing[@]})) && ((EUID == 0)); then
		log "installing missing closure roots: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 || true
	fi
	for r in "$@"; do
		if dpkg-query -W -f='${Status}' "$r" 2>/dev/null | grep -q ' installed$'; then
			echo "$r"
		else
			log "WARNING: $r is not installed and could not be installed: dropped from the closure"
			echo "$r" >>"$TMP/dropped"  # runs in a subshell: main reads the file
		fi
	done
}

# gen_debian NAME ROOT...: materialised Debian closure in bench/.cache/store-NAME, graph in
# NAME.graph.json (paths point at the materialised copies), stats in NAME.meta
gen_debian() {
	local name=$1; shift
	local store=$CACHE/store-$name stamp roots=() r
	for r in "$@"; do roots+=(--root "$r"); done
	stamp="$(sha256sum "$GEN" | cut -c1-16) $store $*"
	closure_is_current "$name" "$stamp" && return 0
	log "materialising the $name closure (${*}) into $store (--copy)"
	rm -rf "$store" "$CACHE/$name".*
	python3 "$GEN" "${roots[@]}" --store-dir "$store" --materialize "$store" --copy \
		--out "$CACHE/$name.graph.json" 2>&1 | grep -E '^\[(materialize|debian)\]' >&2
	describe_closure "$name" "$stamp"
}

# prepare_closure medium|large: the Debian closure of the installed roots (roots that cannot
# be installed are dropped and listed in $TMP/dropped), generated once into store-NAME/
prepare_closure() {
	local roots
	case $1 in
	medium) mapfile -t roots < <(installed_roots "${MEDIUM_ROOTS[@]}") ;;
	large) mapfile -t roots < <(installed_roots "${MEDIUM_ROOTS[@]}" "${LARGE_EXTRA_ROOTS[@]}") ;;
	*) die "unknown closure: $1 (medium or large)" ;;
	esac
	gen_debian "$1" "${roots[@]}"
}

# gen_many: the synthetic 100,000-path closure with generated files in bench/.cache/store-many
gen_many() {
	local name=many store=$CACHE/store-many stamp
	stamp="$(sha256sum "$GEN" | cut -c1-16) $store synthetic 100000 seed 7"
	closure_is_current "$name" "$stamp" && return 0
	log "materialising the synthetic 100,000-path closure into $store"
	rm -rf "$store" "$CACHE/$name".*
	python3 "$GEN" --synthetic 100000 --seed 7 --store-dir "$store" --materialize "$store" \
		--out "$CACHE/$name.graph.json" 2>&1 | grep -E '^\[materialize\]' >&2
	describe_closure "$name" "$stamp"
}

# closure_is_current NAME STAMP: NAME was generated completely, from the same inputs
closure_is_current() {
	[[ -s $CACHE/$1.graph.json && -s $CACHE/$1.meta && "$(cat "$CACHE/$1.stamp" 2>/dev/null)" == "$2" ]]
}

# describe_closure NAME STAMP: NAME.dirs (the store paths relative to /, in graph order,
# for the tar floors' -T), NAME.meta (counts) and the stamp that marks them complete
describe_closure() {
	local name=$1 store=$CACHE/store-$1
	python3 -c 'import json,sys; print("\n".join(e["path"].lstrip("/") for e in json.load(open(sys.argv[1]))))' \
		"$CACHE/$name.graph.json" >"$CACHE/$name.dirs"
	{
		echo "paths=$(wc -l <"$CACHE/$name.dirs")"
		echo "files=$(find "$store" -type f | wc -l)"
		echo "symlinks=$(find "$store" -type l | wc -l)"
		echo "bytes=$(find "$store" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%.0f", s}')"
	} >"$CACHE/$name.meta"
	echo "$2" >"$CACHE/$name.stamp"
}

meta() { sed -n "s/^$2=//p" "$CACHE/$1.meta"; }

# make_attrs NAME: image attrs for each compressor, outputs in bench/.cache/out/.
# contents: the closure's roots (paths no other path refers to), or [] with --empty-contents.
make_attrs() {
	local name=$1 c ext
	for c in none gz zstd; do
		case $c in none) ext=tar ;; gz) ext=tar.gz ;; zstd) ext=tar.zst ;; esac
		python3 - "$CACHE/$name.graph.json" "$OUT/$name.$ext" "$c" "$CONTENTS" >"$CACHE/attrs-$name-$c.json" <<'EOF'
import json, sys
graph, out, comp, contents = sys.argv[1:]
closure = json.load(open(graph))
referenced = {r for e in closure for r in e["references"] if r != e["path"]}
roots = sorted(e["path"] for e in closure if e["path"] not in referenced) if contents == "roots" else []
json.dump({"name": "bench", "tag": "latest", "contents": roots, "config": {}, "maxLayers": 100,
           "compressor": comp, "closure": closure, "outputs": {"out": out}}, sys.stdout)
EOF
	done
}

# warm NAME: read every file of the closure once (page cache), since dropping caches is not reliable here
warm() { find "$CACHE/store-$1" -type f -print0 | xargs -0 cat >/dev/null; }

# ------------------------------------------------------------------------ timing

declare -A T=() R=() FAIL=()   # T[key]="s s s", R[key]="kB kB", FAIL[key]=reason

# time_cmd CMD: runs CMD under /usr/bin/time -v; sets TC_SECS (wall, from $EPOCHREALTIME,
# ~1 ms resolution instead of time's 10 ms), TC_RSS_KB (Maximum resident set size: the
# largest single process of the command, pipelines included) and TC_RC.
time_cmd() {
	local tf=$TMP/time.txt t0 t1
	t0=$EPOCHREALTIME
	if timeout "$TIMEOUT" /usr/bin/time -v -o "$tf" bash -c "$1" >/dev/null 2>"$TMP/stderr.txt"; then
		TC_RC=0
	else
		TC_RC=$?
	fi
	t1=$EPOCHREALTIME
	TC_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a}')
	TC_RSS_KB=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tf" 2>/dev/null || true)
	TC_RSS_KB=${TC_RSS_KB:-0}
}

# measure KEY CMD RUN: one timed run, recorded under KEY
measure() {
	local key=$1 cmd=$2 run=$3
	[[ -n ${FAIL[$key]:-} ]] && return 0
	time_cmd "$cmd"
	if ((TC_RC)); then
		FAIL[$key]="exit $TC_RC"
		((TC_RC != 124)) || FAIL[$key]+=" (timeout ${TIMEOUT}s)"
		log "FAILED ($key, ${FAIL[$key]}): $cmd"
		tail -5 "$TMP/stderr.txt" | sed 's/^/    /' >&2
		return 0
	fi
	T[$key]+="$TC_SECS " R[$key]+="$TC_RSS_KB "
	printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$key" "$run" "$TC_SECS" "$TC_RSS_KB" >>"$RUNS_TSV"
	log "  $key run $run: ${TC_SECS} s, $((TC_RSS_KB / 1024)) MB"
}

# bench_set KEY CMD PREP [KEY CMD PREP ...]: RUNS rounds; each round runs every command
# once (its PREP first, untimed), starting one later each round (AB, BA, AB... for two), so
# no command always runs first. An empty CMD is skipped.
bench_set() {
	local args=("$@") n=$(($# / 3)) i j k
	for ((i = 1; i <= RUNS; i++)); do
		for ((j = 0; j < n; j++)); do
			k=$((((j + i - 1) % n) * 3))
			[[ -n ${args[k + 1]} ]] || continue
			eval "${args[k + 2]}"
			measure "${args[k]}" "${args[k + 1]}" "$i"
		done
	done
	return 0
}

# bench_pair KEY_A CMD_A KEY_B CMD_B [PREP_A [PREP_B]]: bench_set of two; PREP_B defaults
# to PREP_A, and both to nothing.
bench_pair() {
	local pa=${5:-:}
	bench_set "$1" "$2" "$pa" "$3" "$4" "${6:-$pa}"
}

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END{if(!NR){print ""; exit}
	print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
spread() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END{if(!NR) exit
	m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.0f", 50 * (a[NR] - a[1]) / m}'; }
maxof() { tr ' ' '\n' | awk 'NF && $1 > m {m = $1} END{print m + 0}'; }
calc() { awk "BEGIN{printf \"$1\", $2}"; }
