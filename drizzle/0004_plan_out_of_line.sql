-- An execution's row is rewritten at every transition (its sequence, counters, status). Its plan (kilobytes of
-- steps, SQL and programs) is written once: kept out of line (TOAST), a rewrite of the row copies a pointer to
-- it, not the plan. PostgreSQL moves columns out of line only once a row passes toast_tuple_target (2 KB by
-- default); at 128 bytes the plan goes out of line. The other columns that could be moved stay in the row
-- (MAIN: compressed in place, out of line only if the row would not fit a page), so that a transition that
-- writes one of them (usage at every step) does not write a TOAST value and its index entry too.
ALTER TABLE "executions" SET (toast_tuple_target = 128);--> statement-breakpoint
ALTER TABLE "executions"
  ALTER COLUMN "tenant_id" SET STORAGE MAIN,
  ALTER COLUMN "correlation_id" SET STORAGE MAIN,
  ALTER COLUMN "status" SET STORAGE MAIN,
  ALTER COLUMN "options" SET STORAGE MAIN,
  ALTER COLUMN "final_result" SET STORAGE MAIN,
  ALTER COLUMN "error" SET STORAGE MAIN,
  ALTER COLUMN "usage" SET STORAGE MAIN,
  ALTER COLUMN "lease_owner" SET STORAGE MAIN;
