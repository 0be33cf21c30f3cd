# Fallback for `diesel print-schema` (SQLite, with sqlite_integer_primary_key_is_bigint) when
# diesel_cli is not installed: prints the same format from PRAGMA table_info/foreign_key_list.
import sqlite3, sys, re
db = sqlite3.connect(sys.argv[1])
# The original's tables kept for its tools only (diesel.toml's except_tables).
COMPAT_ONLY = {"cluster_roll_back_record", "cluster_shard_backup_restore_log", "cluster_shard_topology", "data_centers", "mysql_pg_install_log", "rbr_consfailover", "restore_log", "server_nodes_conn_stats", "server_nodes_stats", "table_move_jobs"}
tables = [r[0] for r in db.execute("select name from sqlite_master where type='table' and name not like 'sqlite_%' and name not like '__diesel%' order by name") if r[0] not in COMPAT_ONLY]
def ty(t, notnull, pk_int):
    t = t.upper()
    if pk_int or t in ('BIGINT',): base = 'BigInt'
    elif t == 'INTEGER': base = 'Integer'
    elif t == 'TIMESTAMP': base = 'Timestamp'
    else: base = 'Text'
    return base if notnull else f'Nullable<{base}>'
out = ["// @generated automatically by Diesel CLI.", ""]
joins = []
for t in tables:
    cols = list(db.execute(f"pragma table_info('{t}')"))
    pks = [c for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0]
    out.append("diesel::table! {")
    out.append(f"    {t} ({', '.join(c[1].lower() if c[1]!=c[1].lower() else c[1] for c in pks)}) {{")
    for cid, name, ctype, notnull, dflt, pk in cols:
        pk_int = pk > 0 and ctype.upper() == 'INTEGER'
        nn = notnull or pk > 0
        if name != name.lower():
            out.append(f'        #[sql_name = "{name}"]')
        out.append(f"        {name.lower()} -> {ty(ctype, nn, pk_int)},")
    out.append("    }")
    out.append("}")
    out.append("")
    for fk in db.execute(f"pragma foreign_key_list('{t}')"):
        joins.append((t, fk[2], fk[3]))
for a, b, col in sorted(joins):
    out.append(f"diesel::joinable!({a} -> {b} ({col}));")
out.append("")
out.append("diesel::allow_tables_to_appear_in_same_query!(")
for t in tables: out.append(f"    {t},")
out.append(");")
print("\n".join(out))
