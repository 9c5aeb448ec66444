/*
** migrate.h: the sql/NNN_*.sql migration runner (see migrate.c).
*/
#ifndef SHELFSYNC_MIGRATE_H
#define SHELFSYNC_MIGRATE_H

#include <stddef.h>

/*
** Applies, in name order, every sql_dir/NNN_*.sql file not yet recorded in
** schema_migrations, each in its own transaction together with its record,
** under a session advisory lock (concurrent runs wait, then find nothing to
** do). Refuses to run, applying nothing, when an applied file has changed or a
** pending file is numbered at or below the highest applied one. Returns 0, or <0 with
** a message in err naming the file, line and statement that failed.
*/
int migrate_run(const char *conninfo, const char *sql_dir, char *err, size_t errlen);

#endif
