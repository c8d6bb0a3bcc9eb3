# Writes OUT, a C file holding every migration in SQL_DIR and every
# repeatable file in SQL_DIR/repeatable, each in name order, as strings, and
# the checksum of the repeatable set.
set(body "/* Generated from sql/ by cmake/embed_sql.cmake; do not edit. */\n#include \"db.h\"\n\n")
set(i 0)

# embed(ARRAY GLOB): appends the files matching GLOB to body and their table,
# named ARRAY, to tables.
function(embed array pattern)
  file(GLOB files ${pattern})
  list(SORT files)
  set(table "const walq__migration ${array}[] = {\n")
  foreach(f IN LISTS files)
    get_filename_component(name ${f} NAME)
    file(READ ${f} hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
    string(APPEND body "static const char sql_${i}[] = {${bytes}0x00};\n")
    string(APPEND table "    {\"${name}\", sql_${i}},\n")
    math(EXPR i "${i} + 1")
  endforeach()
  string(APPEND table "    {0, 0}\n};\n")
  set(body "${body}" PARENT_SCOPE)
  set(i ${i} PARENT_SCOPE)
  set(tables "${tables}\n${table}" PARENT_SCOPE)
endfunction()

embed(walq__migrations "${SQL_DIR}/[0-9]*.sql")
embed(walq__repeatables "${SQL_DIR}/repeatable/*.sql")

# What `sha256sum *.sql | sha256sum` prints in sql/repeatable (LC_ALL=C), so
# that the checksum recorded in walq.repeatables can be made by hand too.
file(GLOB files ${SQL_DIR}/repeatable/*.sql)
list(SORT files)
set(listing "")
foreach(f IN LISTS files)
  get_filename_component(name ${f} NAME)
  file(SHA256 ${f} sum)
  string(APPEND listing "${sum}  ${name}\n")
endforeach()
string(SHA256 checksum "${listing}")
string(APPEND tables "\nconst char walq__repeatables_checksum[] = \"${checksum}\";\n")

file(WRITE ${OUT} "${body}${tables}")
