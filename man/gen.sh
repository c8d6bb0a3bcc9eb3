#!/bin/sh
# Generates the manual pages from the program's own --help, so that they say
# what the program says: walq(1), and walq-COMMAND(1) for each command that
# "walq --help" lists.  help2man (Debian's help2man package) writes the roff;
# the pages are gzip'ed as Debian installs them.
#
#   gen.sh WALQ OUTDIR SOURCEDIR VERSION
set -eu
walq=$1 out=$2 src=$3 version=$4
work=$out.work # wrappers and help2man's includes, not installed
mkdir -p "$out" "$work/bin"
rm -f "$out"/*.1 "$out"/*.1.gz

# The commands and their one-line descriptions, from the "Commands:" list.
"$walq" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\)  *\(.*\)$/\1 \2/p' \
    >"$work/commands"
[ -s "$work/commands" ] || { echo "gen.sh: no commands in \"$walq --help\"" >&2; exit 1; }

pages="walq"
while read -r cmd _; do pages="$pages walq-$cmd"; done <"$work/commands"

# see_also PAGE: the [SEE ALSO] section of PAGE: every other page.
see_also() {
    echo "[SEE ALSO]"
    for p in $pages; do
        [ "$p" = "$1" ] || printf '.BR %s (1),\n' "$p"
    done
    echo ".BR systemd.service (5),"
    echo ".BR psql (1)."
    echo ".PP"
    echo "The full documentation is in /usr/share/doc/walq and in the docs/"
    echo "directory of the source."
}

# page NAME DESCRIPTION PROGRAM: one page, from PROGRAM --help.
page() {
    name=$1 desc=$2 prog=$3
    { see_also "$name"; [ ! -f "$src/man/$name.h2m" ] || cat "$src/man/$name.h2m"; } >"$work/$name.h2m"
    help2man --no-info --no-discard-stderr --section=1 --manual="walq manual" \
        --source="walq $version" --version-string="$version" --name="$desc" \
        --include="$work/$name.h2m" --output="$out/$name.1" "$prog"
    gzip -9nf "$out/$name.1"
}

# help2man runs a program by the page's name; a command's is "walq COMMAND".
# Usage lines after the first become help2man's "or:" lines.
wrapper() {
    cat >"$work/bin/$1" <<WRAP
#!/bin/sh
[ "\$1" = --version ] && exec "$walq" --version
"$walq" $2 "\$@" | sed 's/^       walq /  or:  walq /'
WRAP
    chmod +x "$work/bin/$1"
}

wrapper walq ""
page walq "a PostgreSQL job queue that reads its jobs from the WAL" "$work/bin/walq"
while read -r cmd desc; do
    wrapper "walq-$cmd" "$cmd"
    page "walq-$cmd" "$desc" "$work/bin/walq-$cmd"
done <"$work/commands"
