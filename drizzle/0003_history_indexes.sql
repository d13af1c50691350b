DROP INDEX "executions_tenant_created_idx";--> statement-breakpoint
CREATE INDEX "executions_tenant_status_created_idx" ON "executions" USING btree ("tenant_id","status","created_at" DESC NULLS FIRST,"id" DESC NULLS FIRST);--> statement-breakpoint
CREATE INDEX "executions_tenant_created_idx" ON "executions" USING btree ("tenant_id","created_at" DESC NULLS FIRST,"id" DESC NULLS FIRST);