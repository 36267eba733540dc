#ifndef HEROLD_STORE_PG_H
#define HEROLD_STORE_PG_H

/*
 * What the PostgreSQL store (store_pg.c) offers beyond store.h, where store_pg_open is
 * declared: the schema it creates, for the test that holds the compiled-in SQL to the
 * files in schemas/sql/, and for tools. Any thread may call these.
 */

/* The schema version this herold creates or migrates to at open. */
#define STORE_PG_SCHEMA_VERSION 1

/* The SQL that takes the schema from version - 1 to version, byte-identical to
 * schemas/sql/00<version>_*.sql; NULL for a version outside 1..STORE_PG_SCHEMA_VERSION.
 * The string has static storage: do not free it. */
const char *store_pg_schema_sql(int version);

#endif
