#!/usr/bin/env bash
# The Debian package: a fresh build directory, `cpack -G DEB`, and checks of
# what the .deb holds (the program, the library and its soname link, the
# header, walq.pc, the systemd units and a manual page per command that
# `walq --help` lists), that the program runs from the unpacked tree, that
# every page renders without a warning, that the units pass
# `systemd-analyze verify`, and that apt would install it here.  No server.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
for tool in cmake cpack dpkg-deb help2man; do
    command -v "$tool" >/dev/null || fail "$tool is missing (tests/setup-debian.sh installs it)"
done

src=$WALQ_SOURCE_DIR
build=$WORK/build
# The version CMakeLists.txt gives the project, which the package must carry.
version=$(sed -n 's/^project(walq VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$version" ] || fail "no project version in $src/CMakeLists.txt"

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
    >"$WORK/cmake.log" 2>&1 || fail "cmake failed: $(tail -20 "$WORK/cmake.log")"
cmake --build "$build" -j2 >"$WORK/build.log" 2>&1 || fail "build failed: $(tail -20 "$WORK/build.log")"
(cd "$build" && cpack -G DEB) >"$WORK/cpack.log" 2>&1 || fail "cpack failed: $(tail -20 "$WORK/cpack.log")"
deb=$(ls "$build"/walq_*.deb)
arch=$(dpkg --print-architecture)
assert_eq "$(basename "$deb")" "walq_${version}_${arch}.deb" "cpack -G DEB made walq_${version}_${arch}.deb"

# The control file: name, the project's version, a maintainer, a description,
# and the libraries the program and the library link, found by dpkg-shlibdeps.
assert_eq "$(dpkg-deb -f "$deb" Package)" walq "Package: walq"
assert_eq "$(dpkg-deb -f "$deb" Version)" "$version" "Version: the project's"
assert_match "$(dpkg-deb -f "$deb" Maintainer)" '^[^<]+ <[^>]+@[^>]+>$' "a Maintainer with an address"
assert_match "$(dpkg-deb -f "$deb" Description)" 'logical replication' "a Description"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libc6 libpq5 libyajl2 libjson-c5 libsystemd0; do
    [[ ", $depends," == *", $lib"[\ ,]* ]] || fail "Depends names $lib: $depends"
done
pass "Depends: $depends"

dpkg-deb -c "$deb" | awk '{print $NF == "->" ? $(NF-2) : ($0 ~ / -> / ? $(NF-2) : $NF)}' \
    | sed 's|^\./|/|' >"$WORK/contents"
has() {
    grep -Eq "^$1\$" "$WORK/contents" || fail "the package holds $1 (it holds: $(tr '\n' ' ' <"$WORK/contents"))"
}
has /usr/bin/walq
has '/usr/lib/([a-z0-9_-]+/)?libwalq\.so'
has "/usr/lib/([a-z0-9_-]+/)?libwalq\\.so\\.${version%%.*}"
has "/usr/lib/([a-z0-9_-]+/)?libwalq\\.so\\.$version"
has /usr/include/walq.h
has '/usr/lib/([a-z0-9_-]+/)?pkgconfig/walq\.pc'
for unit in walq-consume.service walq-consume@.service walq-audit@.service; do
    has "(/usr)?/lib/systemd/system/$unit"
done
has /usr/share/man/man1/walq.1.gz
# A page for each command the program lists.
commands=$("$WALQ_BIN" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p')
[ "$(echo "$commands" | wc -w)" -ge 8 ] || fail "walq --help lists its commands: $commands"
for cmd in $commands; do
    has "/usr/share/man/man1/walq-$cmd.1.gz"
done
pass "the package holds the program, the library, the header, walq.pc, 3 units and $(($(echo "$commands" | wc -w) + 1)) pages"

# Unpacked: the program runs, against the library and from the paths inside.
root=$WORK/root
dpkg-deb -x "$deb" "$root"
libdir=$(dirname "$(grep -E '/libwalq\.so$' "$WORK/contents")")
assert_eq "$(LD_LIBRARY_PATH=$root$libdir "$root/usr/bin/walq" --version)" "walq $version" \
    "walq --version from the package says the project's version"
assert_eq "$(sed -n 's/^prefix=//p' "$root$libdir/pkgconfig/walq.pc")" /usr "walq.pc's prefix is /usr"
assert_eq "$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=$root$libdir/pkgconfig \
    pkg-config --modversion walq)" "$version" "pkg-config reads the package's walq.pc"
# A program built against the package's header and library runs.
cat >"$WORK/t.c" <<'C'
#include <stdio.h>
#include <walq.h>
int main(void) { printf("%s %d\n", walq_strerror(WALQ_EINVAL), walq_group_name_valid("g1")); return 0; }
C
cc -I"$root/usr/include" "$WORK/t.c" -L"$root$libdir" -lwalq -o "$WORK/t" || fail "a program links the package's libwalq"
assert_match "$(LD_LIBRARY_PATH=$root$libdir "$WORK/t")" ' 1$' "and runs with it"
for unit in walq-consume.service walq-consume@.service walq-audit@.service; do
    f=$(grep -E "/systemd/system/$unit\$" "$WORK/contents")
    assert_match "$(grep '^ExecStart=' "$root$f")" '^ExecStart=/usr/bin/walq (consume|audit) --config /etc/walq/' \
        "$unit runs /usr/bin/walq with its configuration file"
    grep -q '^Type=notify$' "$root$f" || fail "$unit is Type=notify"
    grep -q '^WatchdogSec=' "$root$f" || fail "$unit has a watchdog"
done
pass "the units are Type=notify with a watchdog"

# The units as systemd reads them (the program's path pointed at the unpacked one).
if command -v systemd-analyze >/dev/null; then
    mkdir "$WORK/units"
    for unit in walq-consume.service walq-consume@.service walq-audit@.service; do
        f=$(grep -E "/systemd/system/$unit\$" "$WORK/contents")
        sed "s|/usr/bin/walq|$root/usr/bin/walq|" "$root$f" >"$WORK/units/${unit/@./@test.}"
    done
    capture systemd-analyze verify --man=no "$WORK"/units/*.service
    assert_eq "$CAP_RC|$CAP_ERR" "0|" "systemd-analyze verify finds nothing wrong with the units"
    # The check can fail: a unit with a mistake in it does not pass.
    sed 's/^Type=notify$/Type=notifyy/' "$WORK/units/walq-consume.service" >"$WORK/bad.service"
    capture systemd-analyze verify --man=no "$WORK/bad.service"
    [ -n "$CAP_ERR" ] || fail "systemd-analyze verify complains about Type=notifyy"
else
    echo "SKIP: systemd-analyze is not installed: the units are not verified" >&2
fi

# Every page renders without a warning, and says what --help says.
if command -v man >/dev/null; then
    for page in "$root"/usr/share/man/man1/*.1.gz; do
        warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
        assert_eq "$warnings" "" "$(basename "$page") renders without warnings"
    done
    MANWIDTH=200 man -l "$root/usr/share/man/man1/walq-consume.1.gz" 2>/dev/null | col -b >"$WORK/consume.txt"
    for opt in $("$WALQ_BIN" consume --help | grep -oE '^  --[a-z-]+'); do
        grep -q -- "$opt" "$WORK/consume.txt" || fail "walq-consume(1) documents $opt"
    done
    pass "walq-consume(1) documents every option of walq consume --help"
else
    echo "SKIP: man is not installed: the pages are not rendered" >&2
fi

if command -v lintian >/dev/null; then
    lintian --no-tag-display-limit "$deb" >"$WORK/lintian.log" 2>&1 || true
    grep '^E:' "$WORK/lintian.log" >&2 || true
    echo "lintian: $(grep -c '^E:' "$WORK/lintian.log") errors, $(grep -c '^W:' "$WORK/lintian.log") warnings (not failing the test)" >&2
fi

# apt on this machine would install it: every dependency resolves.
if command -v apt-get >/dev/null; then
    capture apt-get install --simulate --no-download "$deb"
    assert_eq "$CAP_RC" 0 "apt-get install --simulate resolves the package's dependencies: $CAP_ERR"
    assert_match "$CAP_OUT" "Inst walq \\($version" "apt would install walq $version"
fi
