#!/usr/bin/env bash
# Cairn as a library: install it, build examples/embedded against the install (CMake
# package and pkg-config) with no path into the source tree, and run it on a database
# beside plain `cairn`: its runs show in `cairn runs list`, `cairn workflows list` and
# `cairn serve`'s API and inspector, and a retry or replay asked there is executed by
# the example's process, not by `cairn serve`.
#
# usage: library_test.sh PATH/TO/cairn BUILD_DIR SOURCE_DIR
set -uo pipefail

cairn=$(realpath "${1:?usage: library_test.sh PATH/TO/cairn BUILD_DIR SOURCE_DIR}")
build=$(realpath "$2")
src=$(realpath "$3")
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

# ---- install and build ----------------------------------------------------------------------

prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1
check "cmake --install succeeds" test $? = 0
expect_eq "the public headers and only they are installed" \
    "$(cd "$prefix/include" && find . -type f | sort | tr '\n' ' ')" \
    "./cairn/cairn.hpp ./cairn/context.hpp ./cairn/engine.hpp ./cairn/errors.hpp ./cairn/event.hpp ./cairn/flow_control.hpp ./cairn/server.hpp ./cairn/version.hpp ./cairn/workflow.hpp "
expect_eq "public headers include only the standard library, nlohmann/json and cairn/" \
    "$(grep -hE '^#include' "$prefix"/include/cairn/*.hpp | grep -vE '^#include (<[a-z_]+>|<nlohmann/json.hpp>|"cairn/[a-z_]+.hpp")$')" ""
check "CairnConfig.cmake and cairn.pc are installed" \
    test -f "$prefix/lib/cmake/Cairn/CairnConfig.cmake" -a -f "$prefix/lib/pkgconfig/cairn.pc"

# The example is copied out of the tree: it may find Cairn only through the install.
cp -r "$src/examples/embedded" "$work/embedded-src"
cmake -S "$work/embedded-src" -B "$work/embedded-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" 2>&1 &&
    cmake --build "$work/embedded-build" >"$work/build.log" 2>&1
check "the example builds with find_package(Cairn)" test $? = 0 || cat "$work/configure.log" "$work/build.log" | tail -30
check "its build names no file of the source tree" \
    bash -c "! grep -rqF '$src/' '$work/embedded-build' --include='*.make' --include='*.ninja' --include='*.txt' --include='*.rsp'"
embedded=$work/embedded-build/embedded
PKG_CONFIG_PATH=$prefix/lib/pkgconfig c++ -std=c++20 -O0 "$work/embedded-src/main.cpp" -o "$work/embedded-pc" \
    $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs --static cairn) >"$work/pc.log" 2>&1
check "the example builds with pkg-config --static cairn" test $? = 0 || tail -20 "$work/pc.log"
"$embedded" >/dev/null 2>&1
expect_eq "without a database URL it prints usage and exits 2" "$?" 2
"$embedded" "mysql://nowhere" >/dev/null 2>"$work/badurl.err"
expect_eq "a bad URL exits 1" "$?" 1
check "and names the problem" grep -q "mysql" "$work/badurl.err"

# ---- beside cairn, on each backend ----------------------------------------------------------

backends=(sqlite)
if [[ -n ${CAIRN_TEST_PG_URL:-} ]]; then
    backends+=(postgres)
elif [[ -n ${CI:-} ]]; then
    bad "CAIRN_TEST_PG_URL must be set in CI"
else
    echo "SKIP postgres: CAIRN_TEST_PG_URL is not set (scripts/test sets it)"
fi

run_field() {  # run_field ID FIELD: a field of `cairn runs show --json`
    "$cairn" runs show "$1" --json --db "$db" 2>/dev/null | jq -r ".$2"
}

for b in "${backends[@]}"; do
    pick_db "$b" "embedded-$b"
    mkdir -p "$work/$b"
    (cd "$work/$b" && exec "$embedded" "$db" 127.0.0.1:0 >"$work/$b/out" 2>"$work/$b/err") &
    ex_pid=$!
    pids+=("$ex_pid")
    wait_for "$b: the example's runs end" 60 grep -q "(embedded-charge)" "$work/$b/out" ||
        cat "$work/$b/err"
    greet=$(grep -oE 'run [0-9a-f-]+ \(embedded-greet\): completed' "$work/$b/out" | cut -d' ' -f2)
    charge=$(grep -oE 'run [0-9a-f-]+ \(embedded-charge\): failed' "$work/$b/out" | cut -d' ' -f2)
    check "$b: the greeting completed and the charge failed in the example" test -n "$greet" -a -n "$charge"
    ex_base=$(grep -oE 'serving http://[0-9.:]+' "$work/$b/out" | sed 's/serving //')

    key=$("$cairn" keys create --name lib --db "$db" 2>/dev/null)
    H=(-H "Authorization: Bearer $key")
    expect_eq "$b: cairn runs list shows the example's runs" \
        "$("$cairn" runs list --json --db "$db" 2>/dev/null | jq -r '[.runs[].id] | sort | join(",")')" \
        "$(printf '%s\n' "$greet" "$charge" | sort | paste -sd,)"
    check "$b: cairn workflows list shows its workflows with the live process" \
        bash -c "'$cairn' workflows list --db '$db' 2>/dev/null | grep -qE '^embedded-charge +1 +- +active +embedded/charge +- +embedded +failed=1'"

    start_server "$b-serve" --db "$db" || bad "$b: cairn serve starts"
    expect_eq "$b: cairn serve lists the example's runs" \
        "$(curl -s "${H[@]}" "$base/api/engine/runs?workflow=embedded-greet" | jq -r '.runs[0].id')" "$greet"
    expect_eq "$b: and its workflows, not local, with the example's process" \
        "$(curl -s "${H[@]}" "$base/api/engine/workflows" | jq -r '.workflows[] | select(.id == "embedded-greet") | [.local, .processes[0].name, .processes[0].live, .counts.completed] | join(",")')" \
        "false,embedded,true,1"
    expect_eq "$b: the inspector is served" "$(curl -s -o /dev/null -w '%{http_code}' "$base/inspector/")" 200
    check "$b: cairn serve left the failed charge alone" test "$(run_field "$charge" status)" = failed

    touch "$work/$b/$b-funds"  # the card is topped up
    "$cairn" runs retry "$charge" --db "$db" >/dev/null 2>&1
    expect_eq "$b: cairn runs retry exits 0" "$?" 0
    wait_for "$b: the retried charge completes" 30 bash -c "[[ \$('$cairn' runs show '$charge' --json --db '$db' 2>/dev/null | jq -r .status) == completed ]]"
    check "$b: the example's process executed the retry" bash -c "[[ '$(run_field "$charge" worker)' == *:$ex_pid:* ]]"
    expect_eq "$b: with its result" "$(run_field "$charge" output.receipt.charged)" 42

    replay=$(curl -s "${H[@]}" -X POST "$base/api/engine/runs/$greet/replay" | jq -r .id)
    wait_for "$b: the replay completes" 30 bash -c "[[ \$('$cairn' runs show '$replay' --json --db '$db' 2>/dev/null | jq -r .status) == completed ]]"
    check "$b: a replay asked of cairn serve ran in the example" bash -c "[[ '$(run_field "$replay" worker)' == *:$ex_pid:* ]]"
    expect_eq "$b: the example serves its own API with its workflows local" \
        "$(curl -s "${H[@]}" "$ex_base/api/engine/workflows" | jq -r '[.workflows[] | select(.local) | .id] | sort | join(",")')" \
        "embedded-charge,embedded-greet"

    kill -TERM "$ex_pid"
    wait "$ex_pid"
    expect_eq "$b: the example stops cleanly on SIGTERM" "$?" 0
    check "$b: its workflows are then listed as stopped" \
        bash -c "'$cairn' workflows list --db '$db' 2>/dev/null | grep -qE '^embedded-greet .* embedded\(stopped\) '"
    stop_server
done

finish
