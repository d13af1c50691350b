-- An execution's row is rewritten at every transition (its sequence, counters, status). Its plan (kilobytes of
-- steps, SQL and programs) is written once: kept out of line (TOAST), a rewrite of the row copies a pointer to
-- it, not the plan. PostgreSQL moves columns out of line only once a row passes toast_tuple_target (2 KB by
-- default); at 128 bytes every plan of more than a few steps goes out of line.
ALTER TABLE "executions" SET (toast_tuple_target = 128);
